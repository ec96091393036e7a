//! Every reason code rolegate gives for refusing or failing a request: the
//! `userinfo.reason` of the error body and the `reason` label of
//! `rolegate_requests_total`, from one enum so the two cannot drift and a new
//! code is a new variant, not a new string somewhere.

macro_rules! reasons {
    ($($variant:ident => $code:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant,)*
        }

        impl Reason {
            /// Every reason, for documentation and tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The code as it appears in bodies, logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }
        }
    };
}

reasons! {
    // Which credential: request headers.
    MultipleCredentials => "multiple_credentials",
    DuplicateCredentialHeader => "duplicate_credential_header",
    UnsupportedAuthScheme => "unsupported_auth_scheme",
    MalformedCredential => "malformed_credential",
    CredentialTooLong => "credential_too_long",
    // API tokens.
    TokenMalformed => "token_malformed",
    TokenWrongType => "token_wrong_type",
    TokenBadKid => "token_bad_kid",
    TokenBadSignature => "token_bad_signature",
    TokenBadClaims => "token_bad_claims",
    TokenWrongIssuer => "token_wrong_issuer",
    TokenWrongAudience => "token_wrong_audience",
    TokenWrongSubject => "token_wrong_subject",
    TokenExpired => "token_expired",
    TokenNotYetValid => "token_not_yet_valid",
    TokenSigningFailed => "token_signing_failed",
    // Who: the credential names nobody, or nothing was presented.
    UnknownUser => "unknown_user",
    UnknownApiKey => "unknown_api_key",
    UnknownPlayerKey => "unknown_player_key",
    CredentialRequired => "credential_required",
    BadCredentials => "bad_credentials",
    PlaybackTokenRequired => "playback_token_required",
    PlaybackTokenInvalid => "playback_token_invalid",
    PepCredentialRequired => "pep_credential_required",
    PepCredentialInvalid => "pep_credential_invalid",
    // Decisions.
    PolicyDeny => "policy_deny",
    NoRoute => "no_route",
    UndecidedRoute => "undecided_route",
    NotForwardable => "not_forwardable",
    NoOrganisation => "no_organisation",
    NoStream => "no_stream",
    MethodNotAllowed => "method_not_allowed",
    UnknownSubjectType => "unknown_subject_type",
    UnknownResourceType => "unknown_resource_type",
    UnknownAction => "unknown_action",
    // The request itself.
    PathNotAbsolute => "path_not_absolute",
    PathAboveRoot => "path_above_root",
    PathEncodedSeparator => "path_encoded_separator",
    PathBadEncoding => "path_bad_encoding",
    PathForbiddenCharacter => "path_forbidden_character",
    PathNotNormal => "path_not_normal",
    DuplicateHost => "duplicate_host",
    MissingHost => "missing_host",
    BadHost => "bad_host",
    HostAuthorityMismatch => "host_authority_mismatch",
    MethodOverride => "method_override",
    MissingParameter => "missing_parameter",
    AmbiguousParameter => "ambiguous_parameter",
    InvalidParameter => "invalid_parameter",
    InvalidBody => "invalid_body",
    UnsupportedMediaType => "unsupported_media_type",
    InvalidEvaluation => "invalid_evaluation",
    TooManyEvaluations => "too_many_evaluations",
    InvalidEmail => "invalid_email",
    InvalidWebhook => "invalid_webhook",
    WeakPassword => "weak_password",
    UnknownRole => "unknown_role",
    InviteRefused => "invite_refused",
    ResetRefused => "reset_refused",
    MissingOriginalMethod => "missing_original_method",
    MissingOriginalUri => "missing_original_uri",
    DuplicateForwardedHeader => "duplicate_forwarded_header",
    BadForwardedHeader => "bad_forwarded_header",
    ConflictingForwardedHeaders => "conflicting_forwarded_headers",
    BadHeaderField => "bad_header_field",
    // WebSocket upgrades (RFC 6455 handshake; the relay's own limits).
    WebSocketHandshake => "websocket_handshake",
    WebSocketKey => "websocket_key",
    WebSocketVersion => "websocket_version",
    TooManyWebSockets => "too_many_websockets",
    CredentialRevoked => "credential_revoked",
    // ext_authz: a CheckRequest that describes no HTTP request (a gRPC error).
    MalformedCheckRequest => "malformed_check_request",
    PayloadTooLarge => "payload_too_large",
    TooManyAttempts => "too_many_attempts",
    // Not found.
    NoSuchUser => "user",
    NoSuchOrganisation => "organisation",
    NoSuchEndpoint => "endpoint",
    Conflict => "conflict",
    // Faults: rolegate's own, the store's, the upstream's.
    StoreUnavailable => "store_unavailable",
    NotReady => "not_ready",
    UpstreamUnreachable => "upstream_unreachable",
    UpstreamTimeout => "upstream_timeout",
    UpstreamUntrusted => "upstream_untrusted",
    Internal => "internal",
    // Allows, for the metrics label.
    Forwarded => "forwarded",
    Local => "local",
    ForwardAuth => "forward_auth",
    PolicyAllow => "policy_allow",
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn codes_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let code = r.as_str();
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }
}

//! What a request is, before anyone decides on it: its path normalised once
//! ([`path`]) and the client's address as the trusted proxies report it
//! ([`client_addr`]), and its query string decoded once ([`query`]). Every front door describes its request with these, so
//! the same bytes mean the same thing whichever door they came through.

pub mod client_addr;
pub mod head;
pub mod path;
pub mod query;

use http::HeaderName;

/// The request id every answer and every forwarded request carries.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// As a `HeaderName` constant: inserting by `&str` would parse it per request.
pub const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

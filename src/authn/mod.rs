//! Who is calling: which credential a request carries ([`credential`]), the
//! API token format ([`token`]), and the principal behind a credential, looked
//! up through a cache in front of the store ([`cache`], [`single_flight`],
//! [`interner`]).
//!
//! Part of the decision core: no HTTP server types here.

pub mod cache;
pub mod credential;
pub mod interner;
pub mod password;
pub mod playback_token;
pub mod principal;
pub mod single_flight;
pub mod token;

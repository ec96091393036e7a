//! What a request is, before anyone decides on it: its path normalised once
//! ([`path`]) and the client's address as the trusted proxies report it
//! ([`client_addr`]). Every front door describes its request with these, so
//! the same bytes mean the same thing whichever door they came through.

pub mod client_addr;
pub mod path;

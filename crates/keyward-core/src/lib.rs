//! keyward's formats and rules, with no I/O: partner keys and their checksum, one-time link
//! tokens, the request signature in both message forms, validated newtypes and the wire types
//! shared by the server, the SDK and the CLI.

pub mod domain;
pub mod error_code;
pub mod json;
pub mod keys;
pub mod signature;
pub mod token;
pub mod wire;

pub use domain::{Email, PartnerCode};
pub use error_code::ErrorCode;
pub use keys::{KeyKind, KeyPair, PublicKey, SecretKey};
pub use token::LinkToken;

//! keyward's formats and rules, with no I/O: partner keys and their checksum, one-time link
//! tokens, the request signature in both message forms, validated newtypes and the wire types
//! shared by the server, the SDK and the CLI.

pub mod allow_list;
pub mod domain;
pub mod error_code;
pub mod exact_numbers;
pub mod forward_path;
pub mod json;
pub mod keys;
pub mod overlap;
pub mod scan;
pub mod scopes;
pub mod signature;
pub mod token;
pub mod wire;

pub use allow_list::AllowedIps;
pub use domain::{Email, LinkPurpose, PartnerCode, PartnerId, PartnerStatus};
pub use error_code::ErrorCode;
pub use keys::{KeyHash, KeyKind, KeyMode, KeyPair, PublicKey, SecretKey, ServiceToken};
pub use overlap::Overlap;
pub use token::{LinkToken, TokenHash};

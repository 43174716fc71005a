//! Authentication: htpasswd basic auth and Vast.ai's token scheme.
//!
//! - [`htpasswd`]: reading htpasswd files (every format Apache's `htpasswd` writes) into a
//!   [`UserTable`]; [`passwd`]: writing entries.
//! - [`Authenticator`]: the per-request Basic check, with its success cache, dummy hash for
//!   unknown users, bounded hashing, single-flight and per-address failure limiter.
//! - [`vast`]: `OPEN_BUTTON_TOKEN`, its session cookie and `Bearer` header.

mod authenticator;
mod basic;
mod cache;
mod crypt64;
mod hash;
pub mod htpasswd;
mod limiter;
mod md5crypt;
pub mod passwd;
mod shacrypt;
pub mod vast;

pub use authenticator::{AuthSettings, Authenticator, GrantMemo, ReloadReport, Verdict};
pub use basic::{challenge_header, BasicCredentials, MAX_PASSWORD_LEN};
pub use hash::{HashError, Scheme, StoredHash};
pub use htpasswd::{load_file, parse, LineProblem, LoadError, ProblemKind, User, UserTable};
pub use passwd::{htpasswd_line, remove_user_file, upsert_user_file, PasswdError};
pub use vast::{is_browser_navigation, strip_token_query, VastToken};

/// The bcrypt cost vastgate writes (the `USERNAME`/`PASSWORD` user, `vastgate passwd`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

//! The `cvm-image` commands: each command's arguments and handling in its own file; `main.rs`
//! parses the command line and dispatches here. `deploy`'s arguments live with it in
//! [`crate::deploy`].

pub mod build;
pub mod eventlog;
pub mod fetch;
pub mod golden;
pub mod golden_sign;
pub mod inputs;
pub mod inspect;
pub mod keys;
pub mod lock;
pub mod measure;
pub mod run;
pub mod stop;
pub mod tee;
pub mod verify;

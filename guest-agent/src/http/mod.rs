//! The HTTP side shared by the API's handlers: their state and their error answers (leaf modules,
//! so that handlers and the router that mounts them do not import each other).

pub mod error;
pub mod state;

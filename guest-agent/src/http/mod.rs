//! The HTTP side shared by the API's handlers: their state and their error answers, the bound on
//! concurrent expensive requests ([`gate`]) and the server that runs a router on a listener within
//! its bounds ([`server`]). Leaf modules, so that handlers and the router that mounts them do not
//! import each other.

pub mod error;
pub mod gate;
pub mod server;
pub mod state;

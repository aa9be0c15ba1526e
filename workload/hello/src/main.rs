//! `hello`: the example workload service (see the library docs).
//! Environment: GREETING_FILE (required), AGENT_URL (default http://127.0.0.1:7999),
//! HELLO_LISTEN (default 0.0.0.0:8080).

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let config = match cvm_hello::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hello: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = std::env::var("HELLO_LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello: binding {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "hello: listening on {listen}, greeting from {}, PCRs from {}",
        config.greeting_file.display(),
        config.agent
    );
    match cvm_hello::serve(listener, Arc::new(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `make bench`: prints speed figures as ratios against the reference tools, measured in this run.
fn main() -> std::process::ExitCode {
    match cvm_image::bench::run_all() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvm-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

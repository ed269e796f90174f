//! The supamerge CLI.
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let json = std::env::args().any(|a| a == "--json");
    match supamerge::demo::run(supamerge::demo::DemoOptions::default()).await {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", supamerge::demo::render(&r));
            }
            if r.converged {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The `supamerge` command line. Everything lives in [`supamerge::cli`];
//! see `docs/cli.md` for the commands, `--json` shapes and exit codes.

fn main() -> std::process::ExitCode {
    supamerge::cli::main()
}

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = agentcpt::cli::Cli::parse();
    match agentcpt::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

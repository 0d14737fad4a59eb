use clap::Parser;

fn main() -> std::process::ExitCode {
    agentcpt::allocator::return_freed_tensors_to_the_os();
    let cli = agentcpt::cli::Cli::parse();
    match agentcpt::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

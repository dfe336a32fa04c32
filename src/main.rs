//! The `ragmap` command: parse, run, and turn an error into one line and the
//! exit code its kind documents (see `cli::exit_code`).

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", ragmap::term::one_line(err.as_ref()));
            ExitCode::from(cli::exit_code(err.as_ref()))
        }
    }
}

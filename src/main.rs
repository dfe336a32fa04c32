//! The `ragmap` command: parse, run, and turn an error into one line and the
//! exit code its kind documents (see `ragmap::exit`).

use std::process::ExitCode;

use clap::Parser;
use ragmap::term::sanitize;

mod cli;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(ragmap::exit::code_of(err.as_ref()))
        }
    }
}

/// The error chain on one line: "context: cause".
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    sanitize(&parts.join(": ").replace('\n', " ")).into_owned()
}

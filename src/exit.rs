//! The process exit codes the README documents: constants only. Each error
//! type that callers branch on says which code it means (`exit_code`); the
//! command line finds the first such error in a chain. A chat model's failure
//! is not an error of the command (what arrived is printed): `ask` returns
//! `LlmError::exit_code`.

pub const SUCCESS: u8 = 0;
/// Bad input, bad config, empty corpus, a busy workspace, I/O.
pub const FAILURE: u8 = 1;
/// onnxruntime or the embedding model is missing (run `bash scripts/setup`),
/// or the index database lacks the `vector` extension.
pub const SETUP: u8 = 3;
/// The index is missing or damaged, written by a newer ragmap, or built
/// with another embedding model.
pub const INDEX: u8 = 4;
/// No chat endpoint answered; the retrieved passages were printed instead.
pub const LLM_UNREACHABLE: u8 = 5;
/// The endpoint answered with an error, or the answer broke off (what arrived stays printed).
pub const LLM_FAILED: u8 = 6;
/// The answer kept repeating itself and was stopped (what came before stays printed).
pub const LLM_REPEATING: u8 = 7;
/// The embedding server (`[embed] base_url`) was unreachable or failed after its retries.
pub const EMBED_SERVER: u8 = 8;
/// The index database is unreachable, refused the login, or cancelled a
/// statement that ran too long.
pub const DATABASE: u8 = 9;
pub const INTERRUPTED: u8 = 130;

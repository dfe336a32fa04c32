//! The process exit codes the README documents. Each error type that callers
//! branch on says which code it means (`exit_code`); [`code_of`] finds the
//! first such error in a chain. A chat model's failure is not an error of the
//! command (what arrived is printed): `ask` returns `LlmError::exit_code`.

use std::error::Error;

pub const SUCCESS: u8 = 0;
/// Bad input, bad config, empty corpus, a busy workspace, I/O.
pub const FAILURE: u8 = 1;
/// onnxruntime or the embedding model is missing (run `bash scripts/setup`).
pub const SETUP: u8 = 3;
/// The index is missing or damaged.
pub const INDEX: u8 = 4;
/// No chat endpoint answered; the retrieved passages were printed instead.
pub const LLM_UNREACHABLE: u8 = 5;
/// The endpoint answered with an error, or the answer broke off (what arrived stays printed).
pub const LLM_FAILED: u8 = 6;
/// The answer kept repeating itself and was stopped (what came before stays printed).
pub const LLM_REPEATING: u8 = 7;
pub const INTERRUPTED: u8 = 130;

/// The exit code of the first error in `err`'s chain that classifies itself,
/// else [`FAILURE`].
pub fn code_of(err: &(dyn Error + 'static)) -> u8 {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<crate::embed::EmbedError>() {
            return e.exit_code();
        }
        if let Some(e) = e.downcast_ref::<crate::index::IndexError>() {
            return e.exit_code();
        }
        if let Some(e) = e.downcast_ref::<crate::retrieve::RetrieveError>() {
            return e.exit_code();
        }
        if let Some(e) = e.downcast_ref::<crate::server::ServeError>() {
            return e.exit_code();
        }
        next = e.source();
    }
    FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::EmbedError;
    use crate::index::IndexError;
    use crate::retrieve::RetrieveError;
    use std::path::PathBuf;

    #[test]
    fn wrapped_errors_are_classified_by_the_innermost_kind_that_knows() {
        let missing_model = || EmbedError::MissingModel(PathBuf::from("m"));
        assert_eq!(code_of(&missing_model()), SETUP);
        assert_eq!(code_of(&IndexError::Embed(missing_model())), SETUP);
        assert_eq!(code_of(&RetrieveError::Embed(missing_model())), SETUP);
        assert_eq!(
            code_of(&RetrieveError::Open(IndexError::Missing(PathBuf::from(
                "i"
            )))),
            INDEX
        );
        assert_eq!(code_of(&EmbedError::Run("x".into())), FAILURE);
        assert_eq!(code_of(&RetrieveError::Search("x".into())), FAILURE);
        let io = std::io::Error::other("disk");
        assert_eq!(code_of(&io), FAILURE);
    }
}

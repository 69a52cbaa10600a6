//! Opaque `nextToken`s: the store's cursor wrapped so that callers cannot mistake a token of
//! one list for another's, and a token that was not ours is `InvalidNextTokenException`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::ApiError;

/// Which list a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Pipelines,
    Executions,
    ActionExecutions,
    Tags,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Pipelines => "pl1",
            TokenKind::Executions => "ex1",
            TokenKind::ActionExecutions => "ax1",
            TokenKind::Tags => "tg1",
        }
    }
}

/// Wrap a cursor into a token.
pub fn encode<T: Serialize>(kind: TokenKind, cursor: &T) -> Result<String, ApiError> {
    let json = serde_json::to_vec(cursor).map_err(|_| ApiError::internal())?;
    Ok(format!("{}.{}", kind.prefix(), hex::encode(json)))
}

/// Unwrap a token made by [`encode`] for the same kind of list.
pub fn decode<T: DeserializeOwned>(kind: TokenKind, token: &str) -> Result<T, ApiError> {
    let invalid = || ApiError::client("InvalidNextTokenException", "The next token is not valid.");
    let payload = token
        .strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or_else(invalid)?;
    let json = hex::decode(payload).map_err(|_| invalid())?;
    serde_json::from_slice(&json).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_within_their_kind() {
        let token = encode(TokenKind::Executions, &Some("000001#abc".to_string())).unwrap();
        let cursor: Option<String> = decode(TokenKind::Executions, &token).unwrap();
        assert_eq!(cursor.as_deref(), Some("000001#abc"));
    }

    #[test]
    fn foreign_or_damaged_tokens_are_refused() {
        let token = encode(TokenKind::Executions, &"x").unwrap();
        for bad in [
            token.replace("ex1", "pl1"),
            format!("{token}zz"),
            "ex1.".to_string(),
            "garbage".to_string(),
        ] {
            let kind = TokenKind::Executions;
            let error = decode::<String>(kind, &bad).unwrap_err();
            assert_eq!(error.error_type, "InvalidNextTokenException", "{bad}");
        }
        assert!(decode::<String>(TokenKind::Pipelines, &token).is_err());
    }
}

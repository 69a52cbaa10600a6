//! AWS Signature Version 4 verification of every request, against credentials the server holds.
//!
//! The signature is recomputed with the official `aws-sigv4` signer: a signable request is
//! rebuilt from only the headers the client named in `SignedHeaders` (every value of each),
//! signed with the key's secret, the request's own region, service and `X-Amz-Date`, and the
//! result compared in constant time. Nothing is excluded from signing (`excluded_headers =
//! None`): what the client signed is exactly what is checked. Errors carry the exception names
//! AWS answers with, so every client reports them as it would against AWS.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as SigningCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::{HeaderMap, Method, Uri, header};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use crate::protocol::ApiError;

/// The signing name of CodePipeline (`endpointPrefix` in the service model).
pub const SERVICE: &str = "codepipeline";

/// How far a request's `X-Amz-Date` may be from the server's clock, as AWS allows by default.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

const X_AMZ_DATE_FORMAT: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// Access key ids and their secrets. `Debug` shows the key ids only.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: HashMap<String, String>,
}

impl Credentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// One key pair.
    pub fn single(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        let mut credentials = Self::new();
        credentials.insert(access_key_id, secret_access_key);
        credentials
    }

    pub fn insert(
        &mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) {
        self.secrets
            .insert(access_key_id.into(), secret_access_key.into());
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id).map(String::as_str)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.secrets.keys().collect();
        keys.sort();
        f.debug_struct("Credentials")
            .field("access_key_ids", &keys)
            .finish_non_exhaustive()
    }
}

/// Who signed a request that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    /// The region of the credential scope.
    pub region: String,
}

/// The parts of an `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: impl Into<String>) -> ApiError {
    ApiError::client("IncompleteSignatureException", message)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidSignatureException", message)
}

fn unrecognized() -> ApiError {
    ApiError::client(
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
}

fn mismatch() -> ApiError {
    invalid(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service \
         documentation for details.",
    )
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, ApiError> {
    let Some(rest) = value.strip_prefix(ALGORITHM) else {
        return Err(incomplete(format!(
            "Authorization header requires the {ALGORITHM} algorithm."
        )));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            return Err(incomplete(format!(
                "Authorization header is malformed near '{}'.",
                part.trim()
            )));
        };
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let missing = |name: &str| {
        incomplete(format!(
            "Authorization header requires '{name}' parameter. Authorization={ALGORITHM} \
             Credential=..., SignedHeaders=..., Signature=..."
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(format!(
            "Credential is malformed: expected 'access-key-id/YYYYMMDD/region/service/aws4_request', \
             got {} parts.",
            scope.len()
        )));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        terminator,
        signed_headers: signed_headers.split(';').collect(),
        signature,
    })
}

/// Checks request signatures.
#[derive(Debug, Clone)]
pub struct Verifier {
    credentials: Credentials,
    max_clock_skew: Duration,
}

impl Verifier {
    pub fn new(credentials: Credentials, max_clock_skew: Duration) -> Self {
        Self {
            credentials,
            max_clock_skew,
        }
    }

    /// Verify one request as received. `uri` is the URI before any routing rewrote it (the
    /// client signed the path it posted to). A refusal says why, in AWS's terms.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::client(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        let value = value
            .to_str()
            .map_err(|_| incomplete("Authorization header is not valid text."))?;
        let authorization = parse_authorization(value)?;

        // Only long-term keys are held here: a session token cannot be one of ours.
        if headers.contains_key("x-amz-security-token") {
            return Err(unrecognized());
        }
        let Some(secret) = self.credentials.secret(authorization.access_key_id) else {
            return Err(unrecognized());
        };

        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
            })?;
        let signed_at = time::PrimitiveDateTime::parse(amz_date, X_AMZ_DATE_FORMAT)
            .map_err(|_| {
                incomplete(format!(
                    "X-Amz-Date '{amz_date}' is not YYYYMMDD'T'HHMMSS'Z'."
                ))
            })?
            .assume_utc();
        if !amz_date.starts_with(authorization.date) || authorization.date.len() != 8 {
            return Err(invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{}', from '{amz_date}'.",
                authorization.date,
                amz_date.get(..8).unwrap_or(amz_date)
            )));
        }
        if authorization.service != SERVICE {
            return Err(invalid(format!(
                "Credential should be scoped to correct service: '{SERVICE}'."
            )));
        }
        if authorization.terminator != "aws4_request" {
            return Err(invalid(format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
                authorization.terminator
            )));
        }
        self.check_clock(signed_at, now)?;

        // The signer needs `host`; a signature that does not cover it could be replayed
        // against another endpoint.
        if !authorization.signed_headers.contains(&"host") || !headers.contains_key(header::HOST) {
            return Err(invalid(
                "'Host' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        let mut signed = Vec::new();
        for name in &authorization.signed_headers {
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(invalid(format!(
                    "SignedHeaders has an invalid name '{name}'."
                )));
            }
            let mut present = false;
            for value in headers.get_all(*name) {
                let value = value
                    .to_str()
                    .map_err(|_| invalid(format!("Signed header '{name}' is not valid text.")))?;
                signed.push((*name, value));
                present = true;
            }
            if !present {
                return Err(invalid(format!(
                    "Signed header '{name}' is not present in the request."
                )));
            }
        }

        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| uri.path());
        let expected = compute_signature(
            method.as_str(),
            path_and_query,
            signed,
            body,
            SignatureScope {
                access_key_id: authorization.access_key_id,
                secret,
                region: authorization.region,
                service: SERVICE,
                time: signed_at.into(),
            },
        )
        .ok_or_else(mismatch)?;
        let matches: bool = expected
            .as_bytes()
            .ct_eq(authorization.signature.as_bytes())
            .into();
        if !matches {
            return Err(mismatch());
        }
        Ok(Caller {
            access_key_id: authorization.access_key_id.to_string(),
            region: authorization.region.to_string(),
        })
    }

    fn check_clock(&self, signed_at: OffsetDateTime, now: SystemTime) -> Result<(), ApiError> {
        let now = OffsetDateTime::from(now);
        let skew = time::Duration::try_from(self.max_clock_skew).unwrap_or(time::Duration::MAX);
        let format = |t: OffsetDateTime| t.format(X_AMZ_DATE_FORMAT).unwrap_or_default();
        let minutes = self.max_clock_skew.as_secs() / 60;
        if signed_at < now - skew {
            return Err(invalid(format!(
                "Signature expired: {} is now earlier than {} ({} - {minutes} min.)",
                format(signed_at),
                format(now - skew),
                format(now)
            )));
        }
        if signed_at > now + skew {
            return Err(invalid(format!(
                "Signature not yet current: {} is still later than {} ({} + {minutes} min.)",
                format(signed_at),
                format(now + skew),
                format(now)
            )));
        }
        Ok(())
    }
}

/// What a signature is computed with, besides the request itself.
struct SignatureScope<'a> {
    access_key_id: &'a str,
    secret: &'a str,
    region: &'a str,
    service: &'a str,
    time: SystemTime,
}

/// The SigV4 signature of a request made of exactly `headers`, or `None` when the signer
/// refuses the request (then no signature can match).
fn compute_signature(
    method: &str,
    path_and_query: &str,
    headers: Vec<(&str, &str)>,
    body: &[u8],
    scope: SignatureScope<'_>,
) -> Option<String> {
    let identity: Identity = SigningCredentials::new(
        scope.access_key_id,
        scope.secret,
        None,
        None,
        "penstock-api",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(scope.time)
        .settings(settings)
        .build()
        .ok()?
        .into();
    let request = SignableRequest::new(
        method,
        path_and_query,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .ok()?;
    let output = sign(request, &params).ok()?;
    Some(output.signature().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_are_parsed() {
        let parsed = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20240102/eu-west-1/codepipeline/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature=abc123",
        )
        .unwrap();
        assert_eq!(
            parsed,
            Authorization {
                access_key_id: "AKID",
                date: "20240102",
                region: "eu-west-1",
                service: "codepipeline",
                terminator: "aws4_request",
                signed_headers: vec!["content-type", "host", "x-amz-date"],
                signature: "abc123",
            }
        );
    }

    #[test]
    fn malformed_authorization_headers_are_incomplete_signatures() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 Credential=AKID/20240102/eu-west-1/codepipeline/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKID/20240102, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 garbage",
        ] {
            let error = parse_authorization(value).unwrap_err();
            assert_eq!(error.error_type, "IncompleteSignatureException", "{value}");
        }
    }

    #[test]
    fn credentials_never_show_their_secrets() {
        let credentials =
            Credentials::single("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let shown = format!("{credentials:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("wJalr"));
    }

    /// The `get-vanilla` case of AWS's SigV4 test suite: the signer as configured here
    /// (nothing excluded) reproduces the published signature.
    #[test]
    fn the_signer_reproduces_the_aws_test_suite_vanilla_case() {
        let time = OffsetDateTime::from_unix_timestamp(1_440_938_160).unwrap(); // 20150830T123600Z
        let signature = compute_signature(
            "GET",
            "/",
            vec![
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ],
            b"",
            SignatureScope {
                access_key_id: "AKIDEXAMPLE",
                secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                region: "us-east-1",
                service: "service",
                time: time.into(),
            },
        );
        assert_eq!(
            signature.as_deref(),
            Some("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
    }
}

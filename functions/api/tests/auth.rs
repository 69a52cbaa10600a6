//! SigV4 on every request: requests signed as the AWS clients sign them pass; unsigned,
//! mis-signed, stale, tampered or oversized ones are refused with the exception AWS answers
//! with, and change nothing.

mod support;

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use serde_json::json;
use support::{
    Harness, KEY_ID, SECRET, Signer, minutes_from_now, pipeline, sign_request, signed_request,
    unsigned_request,
};

fn create_body(name: &str) -> Vec<u8> {
    json!({ "pipeline": pipeline(name) })
        .to_string()
        .into_bytes()
}

/// The request was refused and the store holds nothing: no pipeline was created.
async fn refused_and_unchanged(harness: &Harness, reply: &support::Reply, error_type: &str) {
    reply.refused(error_type);
    assert!(
        harness.store.snapshot().is_empty(),
        "a refused request changed the store"
    );
}

#[tokio::test]
async fn a_correctly_signed_request_is_served() {
    let harness = Harness::new();
    let reply = harness
        .send(signed_request(
            &Signer::default(),
            "CreatePipeline",
            create_body("web"),
        ))
        .await;
    assert_eq!(reply.ok()["pipeline"]["name"], "web");
}

#[tokio::test]
async fn an_unsigned_request_is_missing_its_token() {
    let harness = Harness::new();
    let reply = harness
        .send(unsigned_request("/", "CreatePipeline", create_body("web")))
        .await;
    refused_and_unchanged(&harness, &reply, "MissingAuthenticationTokenException").await;
}

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_signature() {
    let harness = Harness::new();
    let signer = Signer {
        secret: format!("{SECRET}x"),
        ..Signer::default()
    };
    let reply = harness
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await;
    refused_and_unchanged(&harness, &reply, "InvalidSignatureException").await;
    assert!(
        reply.message().contains("does not match"),
        "{}",
        reply.message()
    );
    assert!(!reply.message().contains(SECRET));
}

#[tokio::test]
async fn an_unknown_key_is_an_unrecognized_client() {
    let harness = Harness::new();
    let signer = Signer {
        key_id: "AKIAUNKNOWNKEY000000".into(),
        ..Signer::default()
    };
    let reply = harness
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await;
    refused_and_unchanged(&harness, &reply, "UnrecognizedClientException").await;
}

#[tokio::test]
async fn a_session_token_is_an_unrecognized_client() {
    let harness = Harness::new();
    let body = create_body("web");
    let mut request = unsigned_request("/", "CreatePipeline", body.clone());
    request.headers_mut().insert(
        "x-amz-security-token",
        HeaderValue::from_static("FwoGZXIvYXdzE"),
    );
    let request = sign_request(&Signer::default(), request, &body);
    let reply = harness.send(request).await;
    refused_and_unchanged(&harness, &reply, "UnrecognizedClientException").await;
}

#[tokio::test]
async fn a_stale_date_is_an_expired_signature() {
    let harness = Harness::new();
    let signer = Signer {
        time: minutes_from_now(-20),
        ..Signer::default()
    };
    let reply = harness
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await;
    refused_and_unchanged(&harness, &reply, "InvalidSignatureException").await;
    assert!(
        reply.message().starts_with("Signature expired"),
        "{}",
        reply.message()
    );
    // Clients correct their clock from the response's Date header.
    assert!(reply.headers.contains_key("date"));
}

#[tokio::test]
async fn a_date_in_the_future_is_not_yet_current() {
    let harness = Harness::new();
    let signer = Signer {
        time: minutes_from_now(20),
        ..Signer::default()
    };
    let reply = harness
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await;
    refused_and_unchanged(&harness, &reply, "InvalidSignatureException").await;
    assert!(
        reply.message().contains("not yet current"),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn the_clock_skew_window_is_configurable() {
    let harness = Harness::with(|deps| deps.max_clock_skew = Duration::from_secs(60));
    let signer = Signer {
        time: minutes_from_now(-5),
        ..Signer::default()
    };
    let reply = harness
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await;
    refused_and_unchanged(&harness, &reply, "InvalidSignatureException").await;
    assert!(reply.message().starts_with("Signature expired"));
    // Within the default window the same age passes.
    let lenient = Harness::new();
    lenient
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await
        .ok();
}

#[tokio::test]
async fn a_tampered_body_is_an_invalid_signature() {
    let harness = Harness::new();
    let signed = signed_request(&Signer::default(), "CreatePipeline", create_body("web"));
    let (parts, _) = signed.into_parts();
    let tampered = create_body("evil");
    let mut request =
        axum::http::Request::from_parts(parts, axum::body::Body::from(tampered.clone()));
    request.headers_mut().insert(
        "content-length",
        tampered.len().to_string().parse().unwrap(),
    );
    let reply = harness.send(request).await;
    refused_and_unchanged(&harness, &reply, "InvalidSignatureException").await;
}

#[tokio::test]
async fn a_changed_signed_header_is_an_invalid_signature() {
    let harness = Harness::new();
    harness.create("web").await;
    let before = harness.store.snapshot();
    let body = json!({ "name": "web" }).to_string().into_bytes();
    let mut request = signed_request(&Signer::default(), "GetPipeline", body);
    // Same body, another operation: the target is signed, so this must not pass.
    request.headers_mut().insert(
        "x-amz-target",
        HeaderValue::from_static("CodePipeline_20150709.DeletePipeline"),
    );
    let reply = harness.send(request).await;
    reply.refused("InvalidSignatureException");
    assert_eq!(harness.store.snapshot(), before, "the pipeline was deleted");
}

#[tokio::test]
async fn another_path_than_the_signed_one_is_an_invalid_signature() {
    let harness = Harness::new();
    let signer = Signer {
        path: "/prod/api".into(),
        ..Signer::default()
    };
    // The path the client posted to is what it signed: the same request on it passes...
    harness
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await
        .ok();
    // ...and moved to another path it does not.
    let moved = signed_request(&signer, "CreatePipeline", create_body("other"));
    let (mut parts, body) = moved.into_parts();
    parts.uri = "/".parse().unwrap();
    let reply = harness
        .send(axum::http::Request::from_parts(parts, body))
        .await;
    reply.refused("InvalidSignatureException");
}

#[tokio::test]
async fn a_signature_for_another_service_is_refused() {
    let harness = Harness::new();
    let signer = Signer {
        service: "s3".into(),
        ..Signer::default()
    };
    let reply = harness
        .send(signed_request(
            &signer,
            "CreatePipeline",
            create_body("web"),
        ))
        .await;
    refused_and_unchanged(&harness, &reply, "InvalidSignatureException").await;
    assert!(
        reply.message().contains("codepipeline"),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn a_signature_that_does_not_cover_host_is_refused() {
    let harness = Harness::new();
    let body = create_body("web");
    let request = signed_request(&Signer::default(), "CreatePipeline", body);
    let (mut parts, body) = request.into_parts();
    let authorization = parts.headers["authorization"].to_str().unwrap().to_string();
    // Drop `host` from the signed list: even if the signature matched, it would bind nothing.
    let rewritten = authorization.replace("host;", "");
    parts
        .headers
        .insert("authorization", rewritten.parse().unwrap());
    let reply = harness
        .send(axum::http::Request::from_parts(parts, body))
        .await;
    refused_and_unchanged(&harness, &reply, "InvalidSignatureException").await;
    assert!(reply.message().contains("Host"), "{}", reply.message());
}

#[tokio::test]
async fn a_malformed_authorization_header_is_an_incomplete_signature() {
    let harness = Harness::new();
    let mut request = unsigned_request("/", "CreatePipeline", create_body("web"));
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/20240101")).unwrap(),
    );
    request
        .headers_mut()
        .insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
    let reply = harness.send(request).await;
    refused_and_unchanged(&harness, &reply, "IncompleteSignatureException").await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_anything_else() {
    let harness = Harness::with(|deps| deps.max_body_bytes = 4096);
    let mut big = pipeline("web");
    big["stages"][0]["actions"][0]["configuration"]["S3ObjectKey"] = json!("k".repeat(8000));
    let body = json!({ "pipeline": big }).to_string().into_bytes();
    let reply = harness
        .send(signed_request(
            &Signer::default(),
            "CreatePipeline",
            body.clone(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_type(), "RequestEntityTooLargeException");
    assert!(reply.message().contains("4096"), "{}", reply.message());
    // Without a Content-Length (a streamed body) the limit holds too.
    let mut streamed = signed_request(&Signer::default(), "CreatePipeline", body);
    streamed.headers_mut().remove("content-length");
    let reply = harness.send(streamed).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(harness.store.snapshot().is_empty());
}

#[tokio::test]
async fn malformed_json_is_a_serialization_error_even_when_signed() {
    let harness = Harness::new();
    for body in [&b"{\"pipeline\": "[..], b"", b"[1, 2]"] {
        let reply = harness
            .send(signed_request(
                &Signer::default(),
                "CreatePipeline",
                body.to_vec(),
            ))
            .await;
        refused_and_unchanged(&harness, &reply, "SerializationException").await;
    }
}

#[tokio::test]
async fn malformed_json_without_a_signature_is_refused_as_unsigned() {
    let harness = Harness::new();
    let reply = harness
        .send(unsigned_request("/", "CreatePipeline", b"{nope".to_vec()))
        .await;
    refused_and_unchanged(&harness, &reply, "MissingAuthenticationTokenException").await;
}

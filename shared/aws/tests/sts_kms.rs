//! The role assumer and KMS secrets against moto.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use penstock_aws::AwsClients;
use penstock_aws::secrets::{KmsSecrets, Secret, SecretError};
use penstock_aws::sts::{AssumeRequest, REFRESH_BEFORE_EXPIRY, RoleAssumer, session_name};
use penstock_aws::testing::{CallCounter, sdk_config, unique_name};

#[tokio::test]
async fn assumed_credentials_act_in_the_target_account_and_are_cached() {
    let config = sdk_config().await;
    let counter = CallCounter::new();
    let clients = AwsClients::with_interceptors(&config, vec![counter.shared()]);
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().expect("clock"))
    };
    let assumer = RoleAssumer::new(clients.sts.clone(), config.clone()).with_clock(clock);
    let request = AssumeRequest {
        role_arn: "arn:aws:iam::222222222222:role/penstock-deploy".into(),
        external_id: Some("penstock-external".into()),
        session_name: session_name("demo", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        region: None,
    };
    let assumed = assumer.config_for(&request).await.expect("assume");
    let target = AwsClients::new(&assumed);
    let identity = target
        .sts
        .get_caller_identity()
        .send()
        .await
        .expect("identity");
    assert_eq!(identity.account(), Some("222222222222"));

    let bucket = unique_name("target");
    target
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let listed = |clients: AwsClients| async move {
        clients
            .s3
            .list_buckets()
            .send()
            .await
            .expect("list")
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert!(listed(target.clone()).await.contains(&bucket));
    assert!(
        !listed(AwsClients::new(&config)).await.contains(&bucket),
        "the bucket is in the target account only"
    );

    assumer.config_for(&request).await.expect("cached");
    assert_eq!(
        counter.executions("STS", "AssumeRole"),
        1,
        "served from the cache"
    );
    // Moto's sessions last an hour; shortly before the end they are assumed again.
    *now.lock().expect("clock") +=
        Duration::from_secs(3600) - REFRESH_BEFORE_EXPIRY + Duration::from_secs(1);
    assumer.config_for(&request).await.expect("assumed again");
    assert_eq!(counter.executions("STS", "AssumeRole"), 2);
}

#[tokio::test]
async fn secrets_are_decrypted_from_kms_ciphertext_and_never_shown() {
    let clients = AwsClients::new(&sdk_config().await);
    let key_id = clients
        .kms
        .create_key()
        .send()
        .await
        .expect("key")
        .key_metadata()
        .expect("metadata")
        .key_id()
        .to_string();
    let secrets = KmsSecrets::new(clients.kms.clone());
    let ciphertext = secrets
        .encrypt_base64(&key_id, &Secret::new("webhook-secret-value"))
        .await
        .expect("encrypt");
    assert!(!ciphertext.contains("webhook-secret-value"));
    let secret = secrets
        .decrypt_base64("PENSTOCK_GITHUB_WEBHOOK_SECRET", &ciphertext)
        .await
        .expect("decrypt");
    assert_eq!(secret.expose(), "webhook-secret-value");
    assert!(!format!("{secret:?}").contains("webhook"));

    let error = secrets
        .decrypt_base64("BROKEN", "not base64 !")
        .await
        .expect_err("not base64");
    assert!(matches!(error, SecretError::NotBase64 { .. }));
    let garbage = base64_of(b"this is no KMS ciphertext blob at all");
    let error = secrets
        .decrypt_base64("GARBAGE", &garbage)
        .await
        .expect_err("garbage");
    assert!(matches!(error, SecretError::Refused { .. }), "{error:?}");
    assert!(!error.is_retryable());
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

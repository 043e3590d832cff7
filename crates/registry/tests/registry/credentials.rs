//! Device credentials: issue, verify, rotate, delete; the verified-secret cache.

use fleetwire_model::{DeviceId, NewDevice};

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    issued_secret_verifies_and_nothing_else_does,
    rotation_rejects_the_old_secret,
    rotation_on_another_node_voids_the_cache,
    deleting_a_device_removes_its_credentials,
    verified_secret_is_cached,
);

async fn device(test: &TestRegistry, name: &str) -> DeviceId {
    let id = DeviceId::new(name).unwrap();
    test.registry
        .create_device(NewDevice {
            id: Some(id.clone()),
            ..NewDevice::default()
        })
        .await
        .unwrap();
    id
}

async fn issued_secret_verifies_and_nothing_else_does(test: TestRegistry) {
    let registry = &test.registry;
    let id = device(&test, "meter").await;
    assert!(
        !registry
            .verify_device_secret(&id, b"anything")
            .await
            .unwrap()
    );

    let secret = registry.issue_credentials(&id).await.unwrap();
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    );
    assert!(registry.device(&id).await.unwrap().has_credentials);

    assert!(
        registry
            .verify_device_secret(&id, secret.as_bytes())
            .await
            .unwrap()
    );
    assert!(!registry.verify_device_secret(&id, b"wrong").await.unwrap());
    assert!(!registry.verify_device_secret(&id, b"").await.unwrap());
    let mut almost = secret.clone().into_bytes();
    almost[0] ^= 1;
    assert!(!registry.verify_device_secret(&id, &almost).await.unwrap());

    // Another device's secret, and unknown devices, are refused.
    let other = device(&test, "other-meter").await;
    assert!(
        !registry
            .verify_device_secret(&other, secret.as_bytes())
            .await
            .unwrap()
    );
    let ghost = DeviceId::new("ghost").unwrap();
    assert!(
        !registry
            .verify_device_secret(&ghost, secret.as_bytes())
            .await
            .unwrap()
    );
}

async fn rotation_rejects_the_old_secret(test: TestRegistry) {
    let registry = &test.registry;
    let id = device(&test, "rotor").await;
    let old = registry.issue_credentials(&id).await.unwrap();
    // Twice: the second answer comes from the cache, which rotation must void.
    assert!(
        registry
            .verify_device_secret(&id, old.as_bytes())
            .await
            .unwrap()
    );
    assert!(
        registry
            .verify_device_secret(&id, old.as_bytes())
            .await
            .unwrap()
    );

    let new = registry.issue_credentials(&id).await.unwrap();
    assert_ne!(old, new);
    assert!(
        !registry
            .verify_device_secret(&id, old.as_bytes())
            .await
            .unwrap()
    );
    assert!(
        registry
            .verify_device_secret(&id, new.as_bytes())
            .await
            .unwrap()
    );
    assert!(
        registry
            .verify_device_secret(&id, new.as_bytes())
            .await
            .unwrap()
    );
    assert!(
        !registry
            .verify_device_secret(&id, old.as_bytes())
            .await
            .unwrap()
    );
}

async fn rotation_on_another_node_voids_the_cache(test: TestRegistry) {
    let id = device(&test, "roamer").await;
    let old = test.registry.issue_credentials(&id).await.unwrap();
    assert!(
        test.registry
            .verify_device_secret(&id, old.as_bytes())
            .await
            .unwrap()
    );

    // A second registry on the same database stands for another node.
    let other_node = test.open_again().await;
    let new = other_node.issue_credentials(&id).await.unwrap();
    assert!(
        !test
            .registry
            .verify_device_secret(&id, old.as_bytes())
            .await
            .unwrap()
    );
    assert!(
        test.registry
            .verify_device_secret(&id, new.as_bytes())
            .await
            .unwrap()
    );
}

async fn deleting_a_device_removes_its_credentials(test: TestRegistry) {
    let registry = &test.registry;
    let id = device(&test, "leaver").await;
    let secret = registry.issue_credentials(&id).await.unwrap();
    assert!(
        registry
            .verify_device_secret(&id, secret.as_bytes())
            .await
            .unwrap()
    );

    registry.delete_device(&id).await.unwrap();
    assert!(
        !registry
            .verify_device_secret(&id, secret.as_bytes())
            .await
            .unwrap()
    );

    // A new device under the same id does not inherit anything.
    let again = device(&test, "leaver").await;
    assert!(!registry.device(&again).await.unwrap().has_credentials);
    assert!(
        !registry
            .verify_device_secret(&again, secret.as_bytes())
            .await
            .unwrap()
    );
}

async fn verified_secret_is_cached(test: TestRegistry) {
    let registry = &test.registry;
    let id = device(&test, "frequent").await;
    let secret = registry.issue_credentials(&id).await.unwrap();

    // The first right answer pays argon2id, the repeated ones do not.
    let before = registry.stats();
    for _ in 0..100 {
        assert!(
            registry
                .verify_device_secret(&id, secret.as_bytes())
                .await
                .unwrap()
        );
    }
    let after = registry.stats();
    assert_eq!(after.secret_verifications - before.secret_verifications, 1);
    assert_eq!(after.secret_cache_hits - before.secret_cache_hits, 99);

    // A wrong secret always pays argon2id, cache or not: guessing stays slow.
    for _ in 0..3 {
        assert!(!registry.verify_device_secret(&id, b"guess").await.unwrap());
    }
    assert_eq!(
        registry.stats().secret_verifications - after.secret_verifications,
        3
    );
}

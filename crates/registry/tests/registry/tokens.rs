//! API tokens: create, list, revoke, authenticate, the bootstrap token.

use fleetwire_model::{NewToken, Role, TokenId};
use fleetwire_registry::{Error, Registry};

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    created_token_authenticates_until_revoked,
    unknown_bearers_are_refused,
    bootstrap_token_is_admin_and_replacing_it_revokes_the_old,
    bad_token_names_are_invalid,
);

fn new_token(name: &str, role: Role) -> NewToken {
    NewToken {
        name: name.to_owned(),
        role,
    }
}

async fn created_token_authenticates_until_revoked(test: TestRegistry) {
    let registry = &test.registry;
    let (viewer, viewer_secret) = registry
        .create_token(new_token("grafana", Role::Viewer))
        .await
        .unwrap();
    let (operator, operator_secret) = registry
        .create_token(new_token("ops", Role::Operator))
        .await
        .unwrap();
    assert!(viewer_secret.starts_with("fwt_"), "{viewer_secret}");
    assert_eq!(viewer_secret.len(), 47);
    assert_ne!(viewer_secret, operator_secret);
    assert_eq!(viewer.name, "grafana");
    assert_eq!(viewer.role, Role::Viewer);

    let listed = registry.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&viewer) && listed.contains(&operator));

    // Twice: the second answer may come from the cache, which revocation must clear.
    for _ in 0..2 {
        assert_eq!(
            registry.authenticate_token(&viewer_secret).await.unwrap(),
            Some(viewer.clone())
        );
        assert_eq!(
            registry.authenticate_token(&operator_secret).await.unwrap(),
            Some(operator.clone())
        );
    }

    registry.revoke_token(&viewer.id).await.unwrap();
    assert_eq!(
        registry.authenticate_token(&viewer_secret).await.unwrap(),
        None
    );
    assert_eq!(
        registry.authenticate_token(&operator_secret).await.unwrap(),
        Some(operator.clone())
    );
    assert_eq!(registry.list_tokens().await.unwrap(), vec![operator]);

    let error = registry.revoke_token(&viewer.id).await.unwrap_err();
    assert!(
        matches!(&error, Error::NotFound { kind: "token", .. }),
        "{error:?}"
    );
    let error = registry
        .revoke_token(&TokenId("tok_nothing".to_owned()))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "token \"tok_nothing\" not found");
}

async fn unknown_bearers_are_refused(test: TestRegistry) {
    let registry = &test.registry;
    let (_, secret) = registry
        .create_token(new_token("ci", Role::Admin))
        .await
        .unwrap();
    for bearer in [
        "",
        "fwt_",
        "fwt_not-a-token",
        &secret[..secret.len() - 1],
        &format!("{secret}x"),
        &"x".repeat(5000),
    ] {
        assert_eq!(
            registry.authenticate_token(bearer).await.unwrap(),
            None,
            "{bearer}"
        );
    }
}

async fn bootstrap_tokens(registry: &Registry) -> Vec<fleetwire_model::ApiToken> {
    let tokens = registry.list_tokens().await.unwrap();
    tokens
        .into_iter()
        .filter(|token| token.name == "bootstrap")
        .collect()
}

async fn bootstrap_token_is_admin_and_replacing_it_revokes_the_old(test: TestRegistry) {
    let registry = &test.registry;
    registry
        .set_bootstrap_token("first-admin-token-0123456789")
        .await
        .unwrap();
    let first = registry
        .authenticate_token("first-admin-token-0123456789")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.name, "bootstrap");
    assert_eq!(first.role, Role::Admin);
    assert_eq!(bootstrap_tokens(registry).await, vec![first.clone()]);

    // Setting the same token again (every start) keeps it as it was.
    registry
        .set_bootstrap_token("first-admin-token-0123456789")
        .await
        .unwrap();
    assert_eq!(bootstrap_tokens(registry).await, vec![first.clone()]);

    registry
        .set_bootstrap_token("second-admin-token-0123456789")
        .await
        .unwrap();
    assert_eq!(
        registry
            .authenticate_token("first-admin-token-0123456789")
            .await
            .unwrap(),
        None
    );
    let second = registry
        .authenticate_token("second-admin-token-0123456789")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.role, Role::Admin);
    assert_eq!(bootstrap_tokens(registry).await, vec![second.clone()]);

    // A revoked bootstrap token comes back when it is set again.
    registry.revoke_token(&second.id).await.unwrap();
    assert_eq!(
        registry
            .authenticate_token("second-admin-token-0123456789")
            .await
            .unwrap(),
        None
    );
    registry
        .set_bootstrap_token("second-admin-token-0123456789")
        .await
        .unwrap();
    assert!(
        registry
            .authenticate_token("second-admin-token-0123456789")
            .await
            .unwrap()
            .is_some()
    );

    let error = registry.set_bootstrap_token("").await.unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
}

async fn bad_token_names_are_invalid(test: TestRegistry) {
    let cases = [
        (
            String::new(),
            "token name: expected 1-128 characters, got 0",
        ),
        (
            "n".repeat(129),
            "token name: expected 1-128 characters, got 129",
        ),
        (
            "bootstrap".to_owned(),
            "token name \"bootstrap\": reserved for the data dir's admin token, expected another name",
        ),
    ];
    for (name, expected) in cases {
        let error = test
            .registry
            .create_token(new_token(&name, Role::Viewer))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
    assert!(test.registry.list_tokens().await.unwrap().is_empty());
}

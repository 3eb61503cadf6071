//! The store suite: the same scenarios on SQLite and on PostgreSQL.

use herald::domain::TenantId;
use herald::outcome::{Channel, DeliveryStatus, NotificationState, RenderedFrom};
use herald::store::{
    self, Audience, AuditQuery, LedgerDelivery, LedgerNotification, LedgerRecord, NewAuditRecord,
    NewTemplate, Recorded, Store, StoreError,
};
use secrecy::SecretString;
use std::sync::Arc;

/// Runs each named scenario once per database.
macro_rules! store_suite {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $scenario() {
                let dir = tempfile::TempDir::new().unwrap();
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                super::$scenario(super::open(&url).await).await;
            })+
        }
        mod postgres {
            $(#[tokio::test]
            #[ignore = "needs PostgreSQL on 127.0.0.1:5432 (HERALD_TEST_POSTGRES_URL); cargo nextest run --run-ignored all runs it"]
            async fn $scenario() {
                let url = crate::support::fresh_postgres_database().await;
                super::$scenario(super::open(&url).await).await;
            })+
        }
    };
}

store_suite!(
    tenants_are_created_once_with_their_first_key,
    keys_are_added_listed_and_revoked,
    migrations_apply_once,
    the_ledger_keeps_outcomes_over_late_acceptances_and_is_tenant_scoped,
    audit_records_chain_per_tenant_and_a_redelivery_is_appended_once,
    retention_removes_what_is_past_its_age_and_keeps_the_rest,
    templates_keep_every_version_per_locale_and_tenant,
    provider_settings_are_replaced_and_removed_per_tenant,
    a_device_token_belongs_to_one_user_at_a_time,
    chat_messages_are_stored_once_numbered_per_conversation_and_logged_per_recipient,
    a_chat_to_a_conversations_members_is_logged_once_per_member_page_by_page,
    a_group_of_chats_keeps_each_stored_message_and_leaves_no_trace_of_the_others,
    an_idempotency_key_keeps_its_binding_until_answered_and_one_repeat_resumes_it,
    a_group_of_key_writes_takes_effect_in_order_per_key,
    an_update_is_logged_once_and_a_message_change_once_per_member_page_by_page,
);

async fn open(url: &str) -> Arc<dyn Store> {
    store::open(&SecretString::from(url.to_owned()))
        .await
        .expect("the store opens")
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

async fn tenants_are_created_once_with_their_first_key(store: Arc<dyn Store>) {
    assert_eq!(store.count_tenants().await.unwrap(), 0);
    let created = store
        .create_tenant(&tenant("acme"), "Acme", ("hk_aaaaaaaaaaaa", &[1; 32]))
        .await
        .unwrap();
    assert_eq!(created.name, "Acme");
    assert_eq!(store.tenant(&tenant("acme")).await.unwrap(), Some(created));
    assert_eq!(store.count_tenants().await.unwrap(), 1);
    let again = store
        .create_tenant(&tenant("acme"), "Acme", ("hk_bbbbbbbbbbbb", &[2; 32]))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    assert!(
        store.api_key("hk_bbbbbbbbbbbb").await.unwrap().is_none(),
        "nothing of the refused tenant stays"
    );
    let key = store.api_key("hk_aaaaaaaaaaaa").await.unwrap().unwrap();
    assert_eq!(key.tenant_id, tenant("acme"));
    assert_eq!(key.hash, vec![1; 32]);
    assert!(!key.revoked);
    assert_eq!(store.tenant(&tenant("nobody")).await.unwrap(), None);
}

async fn keys_are_added_listed_and_revoked(store: Arc<dyn Store>) {
    store
        .create_tenant(&tenant("a"), "A", ("hk_000000000001", &[1; 32]))
        .await
        .unwrap();
    store
        .create_tenant(&tenant("b"), "B", ("hk_000000000002", &[2; 32]))
        .await
        .unwrap();
    store
        .add_api_key(&tenant("a"), "hk_000000000003", &[3; 32])
        .await
        .unwrap();
    let listed: Vec<String> = store
        .api_keys(&tenant("a"))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, ["hk_000000000001", "hk_000000000003"]);
    assert!(
        !store
            .revoke_api_key(&tenant("a"), "hk_000000000002")
            .await
            .unwrap(),
        "a tenant cannot revoke another tenant's key"
    );
    assert!(
        store
            .revoke_api_key(&tenant("a"), "hk_000000000001")
            .await
            .unwrap()
    );
    assert!(
        store
            .api_key("hk_000000000001")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        !store
            .api_key("hk_000000000002")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    let keys = store.api_keys(&tenant("a")).await.unwrap();
    assert!(keys[0].revoked_at.is_some() && keys[1].revoked_at.is_none());
}

async fn migrations_apply_once(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

fn ledger_record(status: DeliveryStatus, attempts: u32, replace: bool) -> LedgerRecord {
    use chrono::SubsecRound;
    let now = chrono::Utc::now().trunc_subsecs(6);
    LedgerRecord {
        notification: LedgerNotification {
            id: "n1".into(),
            tenant_id: "acme".into(),
            kind: "email".into(),
            status: NotificationState::of_delivery(status),
            reason: None,
            created_at: now,
            updated_at: now,
            template: (status != DeliveryStatus::Queued).then(|| RenderedFrom {
                name: "welcome".into(),
                locale: "fr".into(),
                version: Some(2),
            }),
        },
        deliveries: vec![LedgerDelivery {
            recipient: "ada@example.com".into(),
            channel: Channel::Email,
            target: "ada@example.com".into(),
            status,
            attempts,
            last_error: (status == DeliveryStatus::Failed).then(|| "550 no such user".into()),
            reply: (status == DeliveryStatus::Failed).then(|| "550 5.1.1 no such user".into()),
            updated_at: now,
        }],
        replace,
    }
}

async fn the_ledger_keeps_outcomes_over_late_acceptances_and_is_tenant_scoped(
    store: Arc<dyn Store>,
) {
    store
        .write_ledger(&[ledger_record(DeliveryStatus::Failed, 3, true)])
        .await
        .unwrap();
    // The acceptance lands after the outcome: it must not overwrite it.
    store
        .write_ledger(&[ledger_record(DeliveryStatus::Queued, 0, false)])
        .await
        .unwrap();
    let (notification, deliveries) = store
        .notification(&tenant("acme"), "n1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notification.status, NotificationState::Failed);
    assert_eq!(
        notification.template.map(|t| (t.name, t.locale, t.version)),
        Some(("welcome".into(), "fr".into(), Some(2))),
        "the rendered template is kept"
    );
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].reply.as_deref(),
        Some("550 5.1.1 no such user")
    );
    assert_eq!(deliveries[0].attempts, 3);
    assert_eq!(
        deliveries[0].last_error.as_deref(),
        Some("550 no such user")
    );
    assert!(
        store
            .notification(&tenant("other"), "n1")
            .await
            .unwrap()
            .is_none()
    );
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.delete_ledger_before(cutoff).await.unwrap(), 1);
    assert!(
        store
            .notification(&tenant("acme"), "n1")
            .await
            .unwrap()
            .is_none()
    );
}

fn audit(id: &str, tenant: &str) -> NewAuditRecord {
    use chrono::SubsecRound;
    NewAuditRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        event_type: "USER_UPDATED".into(),
        user_id: "u".into(),
        entity_type: "User".into(),
        entity_id: "e".into(),
        changes: "{}".into(),
        occurred_at: chrono::Utc::now().trunc_subsecs(6),
        compliance: false,
    }
}

async fn audit_records_chain_per_tenant_and_a_redelivery_is_appended_once(store: Arc<dyn Store>) {
    let first = [
        audit("a1", "acme"),
        audit("b1", "beta"),
        audit("a2", "acme"),
        audit("a2", "acme"),
    ];
    assert_eq!(
        store.append_audit(&first).await.unwrap(),
        3,
        "a2 twice in one batch counts once"
    );
    assert_eq!(
        store
            .append_audit(&[audit("a1", "acme"), audit("a3", "acme")])
            .await
            .unwrap(),
        1
    );
    let chain = store.audit_chain(&tenant("acme"), 0, 100).await.unwrap();
    let ids: Vec<&str> = chain.iter().map(|r| r.record.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "a3"]);
    assert_eq!(chain.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(chain[1].prev_hash, chain[0].hash);
    assert_eq!(chain[2].prev_hash, chain[1].hash);
    assert_eq!(
        store.audit_chain(&tenant("beta"), 0, 100).await.unwrap()[0].seq,
        1,
        "each tenant has its own chain"
    );
    let verified = herald::audit::verify(store.as_ref(), &tenant("acme"))
        .await
        .unwrap();
    assert!(verified.intact && verified.records == 3);
    let newest = store
        .audit_records(
            &tenant("acme"),
            &AuditQuery {
                limit: 2,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 2]);
}

async fn retention_removes_what_is_past_its_age_and_keeps_the_rest(store: Arc<dyn Store>) {
    use herald::config::RetentionSettings;
    use std::time::Duration;
    store.append_audit(&[audit("old", "acme")]).await.unwrap();
    store
        .append_events(
            &tenant("acme"),
            &[("ada", "notification:new", "{}".to_owned())],
        )
        .await
        .unwrap();
    store
        .write_ledger(&[ledger_record(DeliveryStatus::Delivered, 1, true)])
        .await
        .unwrap();
    let claim = store
        .claim_idempotency_key(
            &tenant("acme"),
            "k",
            &[1],
            &herald::store::KeyBinding {
                event_ids: vec!["0190d8c4-7c8e-7000-8000-000000000001".into()],
                accepted_at: chrono::Utc::now(),
            },
            chrono::Utc::now() - chrono::Duration::hours(24),
            chrono::Utc::now() - chrono::Duration::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(claim, herald::store::Claim::Claimed);
    let keep_a_year = RetentionSettings {
        audit: Duration::from_secs(365 * 86_400),
        ledger: Duration::from_secs(30 * 86_400),
        realtime: Duration::from_secs(86_400),
        every: Duration::from_secs(3600),
    };
    let removed = herald::retention::run_once(store.as_ref(), &keep_a_year)
        .await
        .unwrap();
    assert_eq!(
        removed,
        herald::retention::Removed::default(),
        "nothing is old yet"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let keep_nothing = RetentionSettings {
        audit: Duration::from_millis(1),
        ledger: Duration::from_millis(1),
        realtime: Duration::from_millis(1),
        ..keep_a_year
    };
    let removed = herald::retention::run_once(store.as_ref(), &keep_nothing)
        .await
        .unwrap();
    assert_eq!(removed.audit_records, 1);
    assert_eq!(removed.notifications, 1);
    assert_eq!(removed.realtime_events, 1);
    assert_eq!(
        removed.idempotency_keys, 0,
        "idempotency keys are kept 24 hours"
    );
    assert!(
        store
            .audit_chain(&tenant("acme"), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn template(name: &str, locale: &str, subject: &str) -> NewTemplate {
    NewTemplate {
        name: name.into(),
        locale: locale.into(),
        subject: Some(subject.into()),
        html: format!("<p>{subject}</p>"),
        text: None,
        sample_data: Some(r#"{"name":"Ada"}"#.into()),
    }
}

async fn templates_keep_every_version_per_locale_and_tenant(store: Arc<dyn Store>) {
    let (acme, other) = (tenant("acme"), tenant("other"));
    assert_eq!(store.template_revision(&acme).await.unwrap(), 0);
    let first = store
        .put_template(&acme, &template("welcome", "", "Hi"))
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    let second = store
        .put_template(&acme, &template("welcome", "", "Hello"))
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    let french = store
        .put_template(&acme, &template("welcome", "fr", "Bonjour"))
        .await
        .unwrap();
    assert_eq!(french.version, 1, "versions count per locale");
    store
        .put_template(&other, &template("welcome", "", "Other"))
        .await
        .unwrap();
    let revision = store.template_revision(&acme).await.unwrap();
    assert!(revision >= 3, "every change moves the revision");

    let current = store.template(&acme, "welcome", "", None).await.unwrap();
    assert_eq!(current, Some(second.clone()));
    let old = store.template(&acme, "welcome", "", Some(1)).await.unwrap();
    assert_eq!(old, Some(first));
    assert_eq!(
        store.template_versions(&acme, "welcome", "").await.unwrap(),
        vec![1, 2]
    );
    let listed = store.current_templates(&acme).await.unwrap();
    assert_eq!(listed, vec![second, french]);

    assert_eq!(
        store
            .delete_template(&acme, "welcome", Some("fr"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.delete_template(&acme, "welcome", None).await.unwrap(),
        2
    );
    assert!(store.current_templates(&acme).await.unwrap().is_empty());
    assert!(store.template_revision(&acme).await.unwrap() > revision);
    assert_eq!(
        store.current_templates(&other).await.unwrap().len(),
        1,
        "another tenant's templates stay"
    );
}

async fn provider_settings_are_replaced_and_removed_per_tenant(store: Arc<dyn Store>) {
    let (acme, other) = (tenant("acme"), tenant("other"));
    assert_eq!(store.provider(&acme, "smtp").await.unwrap(), None);
    store
        .put_provider(&acme, "smtp", r#"{"host":"a"}"#)
        .await
        .unwrap();
    let at = store
        .put_provider(&acme, "smtp", r#"{"host":"b"}"#)
        .await
        .unwrap();
    assert_eq!(
        store.provider(&acme, "smtp").await.unwrap(),
        Some((r#"{"host":"b"}"#.to_owned(), at))
    );
    assert_eq!(store.provider(&other, "smtp").await.unwrap(), None);
    assert_eq!(store.provider(&acme, "apns").await.unwrap(), None);
    assert!(store.delete_provider(&acme, "smtp").await.unwrap());
    assert!(!store.delete_provider(&acme, "smtp").await.unwrap());
    assert_eq!(store.provider(&acme, "smtp").await.unwrap(), None);
}

async fn a_device_token_belongs_to_one_user_at_a_time(store: Arc<dyn Store>) {
    let (acme, other) = (tenant("acme"), tenant("other"));
    let first = store
        .register_device(&acme, "u1", "ios", "tok-a")
        .await
        .unwrap();
    assert_eq!(
        (first.user_id.as_str(), first.platform.as_str()),
        ("u1", "ios")
    );
    store
        .register_device(&acme, "u1", "web", "tok-w")
        .await
        .unwrap();
    store
        .register_device(&other, "u1", "ios", "tok-a")
        .await
        .unwrap();
    // Registered again for u2: it moves.
    let moved = store
        .register_device(&acme, "u2", "ios", "tok-a")
        .await
        .unwrap();
    assert_eq!(moved.user_id, "u2");
    assert_eq!(moved.created_at, first.created_at);
    let tokens = |devices: Vec<herald::store::Device>| {
        devices.into_iter().map(|d| d.token).collect::<Vec<_>>()
    };
    assert_eq!(tokens(store.devices(&acme, "u1").await.unwrap()), ["tok-w"]);
    assert_eq!(tokens(store.devices(&acme, "u2").await.unwrap()), ["tok-a"]);
    assert_eq!(
        tokens(store.devices(&other, "u1").await.unwrap()),
        ["tok-a"],
        "another tenant's registry is its own"
    );
    let mobile = store
        .devices_of(&acme, &["u1", "u2", "u3"], &["ios", "android"])
        .await
        .unwrap();
    assert_eq!(tokens(mobile), ["tok-a"]);
    assert!(
        !store
            .remove_device(&acme, "tok-a", Some("u1"))
            .await
            .unwrap(),
        "u1 no longer holds it"
    );
    assert!(store.remove_device(&acme, "tok-a", None).await.unwrap());
    assert!(store.devices(&acme, "u2").await.unwrap().is_empty());
}

async fn a_group_of_chats_keeps_each_stored_message_and_leaves_no_trace_of_the_others(
    store: Arc<dyn Store>,
) {
    let (acme, other) = (tenant("acme"), tenant("other"));
    let chat = |id: &'static str, conversation: &'static str| herald::store::NewChat {
        message_id: id,
        conversation_id: conversation,
        sender_id: "ada",
        audience: Audience::Listed(vec!["bob"]),
        payload: serde_json::json!({"messageId": id}),
    };
    store.record_chat(&acme, &chat("m1", "c1")).await.unwrap();
    let alone = herald::store::NewChat {
        audience: Audience::Listed(vec![]),
        ..chat("m4", "c4")
    };
    let members = herald::store::NewChat {
        audience: Audience::Members { page: 10 },
        ..chat("m5", "unknown")
    };
    // Given out of their conversations' order, with one redelivery and two messages for
    // no one among them.
    let group = [
        (&acme, chat("m3", "c3")),
        (&acme, chat("m1", "c1")),
        (&acme, alone),
        (&other, chat("m2", "c2")),
        (&acme, members),
        (&acme, chat("m2", "c2")),
    ];
    let outcomes: Vec<Recorded> = store
        .record_chats(&group)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        outcomes,
        [
            Recorded::Stored(1),
            Recorded::Before,
            Recorded::NoAudience,
            Recorded::Stored(1),
            Recorded::NoAudience,
            Recorded::Stored(1),
        ],
        "each message's own outcome, in the order given"
    );
    let logged = |tenant: TenantId| {
        let store = store.clone();
        async move {
            let events = store.events_after(&tenant, "bob", 0, 100).await.unwrap();
            let mut ids: Vec<String> = events
                .iter()
                .map(|e| {
                    let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                    payload["messageId"].as_str().unwrap().to_owned()
                })
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(logged(acme.clone()).await, ["m1", "m2", "m3"]);
    assert_eq!(logged(other.clone()).await, ["m2"]);
    assert!(store.chat_message(&acme, "m4").await.unwrap().is_none());
    assert!(store.chat_message(&acme, "m5").await.unwrap().is_none());
    // The conversation a message for no one numbered is left as it was: the next is 1.
    assert_eq!(
        store.record_chat(&acme, &chat("m6", "c4")).await.unwrap(),
        Recorded::Stored(1)
    );
}

async fn chat_messages_are_stored_once_numbered_per_conversation_and_logged_per_recipient(
    store: Arc<dyn Store>,
) {
    let acme = tenant("acme");
    let chat = |id: &'static str, conversation: &'static str| herald::store::NewChat {
        message_id: id,
        conversation_id: conversation,
        sender_id: "ada",
        audience: Audience::Listed(vec!["bob", "cy"]),
        payload: serde_json::json!({"messageId": id, "content": "hi"}),
    };
    assert_eq!(
        store.record_chat(&acme, &chat("m1", "c1")).await.unwrap(),
        Recorded::Stored(1)
    );
    assert_eq!(
        store.record_chat(&acme, &chat("m2", "c1")).await.unwrap(),
        Recorded::Stored(2)
    );
    assert_eq!(
        store.record_chat(&acme, &chat("m3", "c2")).await.unwrap(),
        Recorded::Stored(1)
    );
    assert_eq!(
        store.record_chat(&acme, &chat("m2", "c1")).await.unwrap(),
        Recorded::Before,
        "a redelivered message is stored once"
    );
    assert_eq!(
        store.record_chat(&acme, &chat("m4", "c1")).await.unwrap(),
        Recorded::Stored(3)
    );
    let bob = store.events_after(&acme, "bob", 0, 100).await.unwrap();
    let sequences: Vec<(String, i64)> = bob
        .iter()
        .map(|e| {
            let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            (
                payload["messageId"].as_str().unwrap().to_owned(),
                payload["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sequences,
        [
            ("m1".into(), 1),
            ("m2".into(), 2),
            ("m3".into(), 1),
            ("m4".into(), 3)
        ]
    );
    assert!(bob.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert!(bob.iter().all(|e| e.kind == "message:new"));
    let after = store
        .events_after(&acme, "bob", bob[1].cursor, 100)
        .await
        .unwrap();
    assert_eq!(after.len(), 2, "a cursor resumes after what it names");
    assert!(
        store
            .events_after(&tenant("other"), "bob", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(store.acknowledged(&acme, "bob").await.unwrap(), 0);
    store
        .acknowledge(&acme, "bob", bob[2].cursor)
        .await
        .unwrap();
    store
        .acknowledge(&acme, "bob", bob[0].cursor)
        .await
        .unwrap();
    assert_eq!(
        store.acknowledged(&acme, "bob").await.unwrap(),
        bob[2].cursor,
        "an acknowledgement never moves back"
    );
    let key = store.realtime_key(&[1; 32]).await.unwrap();
    assert_eq!(
        store.realtime_key(&[2; 32]).await.unwrap(),
        key,
        "the first key stays"
    );
}

async fn a_chat_to_a_conversations_members_is_logged_once_per_member_page_by_page(
    store: Arc<dyn Store>,
) {
    use herald::domain::ConversationType;
    let acme = tenant("acme");
    let members = ["ada", "bob", "cy", "dee", "eve"];
    assert!(
        store
            .put_conversation(&acme, "c1", ConversationType::Group, &members)
            .await
            .unwrap()
    );
    let chat = |id: &'static str| herald::store::NewChat {
        message_id: id,
        conversation_id: "c1",
        sender_id: "cy",
        audience: Audience::Members { page: 2 },
        payload: serde_json::json!({"messageId": id}),
    };
    assert_eq!(
        store.record_chat(&acme, &chat("m1")).await.unwrap(),
        Recorded::Stored(1)
    );
    assert_eq!(
        store.record_chat(&acme, &chat("m1")).await.unwrap(),
        Recorded::Before,
        "a retried message appends nothing, on any page"
    );
    for user in members {
        let logged = store.events_after(&acme, user, 0, 100).await.unwrap();
        assert_eq!(logged.len(), usize::from(user != "cy"), "{user}");
    }
    let page = store
        .members_after(&acme, "c1", Some("cy"), "bob", 2)
        .await
        .unwrap();
    assert_eq!(page, ["dee", "eve"], "keyset pages skip the sender");

    // No one but the sender, or no such conversation: nothing is stored.
    store
        .put_conversation(&acme, "alone", ConversationType::Group, &["cy"])
        .await
        .unwrap();
    for conversation in ["alone", "unknown"] {
        let lonely = herald::store::NewChat {
            conversation_id: conversation,
            ..chat("m2")
        };
        assert_eq!(
            store.record_chat(&acme, &lonely).await.unwrap(),
            Recorded::NoAudience
        );
    }
    assert!(
        store
            .conversation(&acme, "unknown")
            .await
            .unwrap()
            .is_none(),
        "a rejected message leaves no conversation behind"
    );
    assert!(
        store
            .conversation(&tenant("other"), "c1")
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_group_of_key_writes_takes_effect_in_order_per_key(store: Arc<dyn Store>) {
    use herald::store::{Claim, KeyBinding, KeyWrite};
    let acme = tenant("acme");
    let binding = KeyBinding {
        event_ids: vec!["e1".into()],
        accepted_at: chrono::Utc::now(),
    };
    let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
    let claim = |key: &'static str| KeyWrite::Claim {
        tenant: &acme,
        key,
        fingerprint: b"f",
        binding: &binding,
        expired_before: long_ago,
        stale_before: long_ago,
    };
    let complete = KeyWrite::Complete {
        tenant: &acme,
        key: "k1",
        status: 202,
        response: "{}",
    };
    // Given with another key between them: k1's writes still take effect in their order.
    let group = [claim("k1"), claim("k2"), claim("k1"), complete, claim("k1")];
    let outcomes = store.write_idempotency_keys(&group).await.unwrap();
    let held = |response: Option<(u16, String)>| {
        Some(Claim::Held {
            fingerprint: b"f".to_vec(),
            response,
        })
    };
    assert_eq!(
        outcomes,
        [
            Some(Claim::Claimed),
            Some(Claim::Claimed),
            held(None),
            None,
            held(Some((202, "{}".into()))),
        ]
    );
}

async fn an_idempotency_key_keeps_its_binding_until_answered_and_one_repeat_resumes_it(
    store: Arc<dyn Store>,
) {
    use herald::store::{Claim, KeyBinding};
    let now = chrono::Utc::now;
    let binding = |id: &str| KeyBinding {
        event_ids: vec![id.to_owned()],
        accepted_at: chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00.123456Z")
            .unwrap()
            .into(),
    };
    let first = binding("0190d8c4-7c8e-7000-8000-000000000001");
    let other = binding("0190d8c4-7c8e-7000-8000-000000000002");
    let claim = |binding: KeyBinding, stale: chrono::Duration| {
        let store = store.clone();
        async move {
            store
                .claim_idempotency_key(
                    &tenant("acme"),
                    "k",
                    &[1],
                    &binding,
                    now() - chrono::Duration::hours(24),
                    now() - stale,
                )
                .await
                .unwrap()
        }
    };
    let long = chrono::Duration::seconds(30);
    assert_eq!(claim(first.clone(), long).await, Claim::Claimed);
    // While the first request publishes, a repeat waits; its own binding is not taken.
    assert_eq!(
        claim(other.clone(), long).await,
        Claim::Held {
            fingerprint: vec![1],
            response: None
        }
    );
    // Not confirmed: of three concurrent repeats, one resumes it with the first binding.
    store
        .unconfirm_idempotency_key(&tenant("acme"), "k")
        .await
        .unwrap();
    let repeats = futures_util::future::join_all((0..3).map(|_| claim(other.clone(), long))).await;
    let resumed: Vec<&Claim> = repeats
        .iter()
        .filter(|c| matches!(c, Claim::Resumed(_)))
        .collect();
    assert_eq!(resumed, [&Claim::Resumed(first.clone())], "{repeats:?}");
    // A claim never answered is resumed once it is stale (its process died).
    assert!(matches!(
        claim(other.clone(), long).await,
        Claim::Held { .. }
    ));
    assert_eq!(
        claim(other.clone(), chrono::Duration::zero()).await,
        Claim::Resumed(first.clone())
    );
    // Answered: every repeat gets the answer.
    store
        .complete_idempotency_key(&tenant("acme"), "k", 202, "{\"id\":\"1\"}")
        .await
        .unwrap();
    store
        .unconfirm_idempotency_key(&tenant("acme"), "k")
        .await
        .unwrap();
    assert_eq!(
        claim(other, chrono::Duration::zero()).await,
        Claim::Held {
            fingerprint: vec![1],
            response: Some((202, "{\"id\":\"1\"}".to_owned()))
        },
        "an answered key is not resumed, and not unconfirmed afterwards"
    );
}

async fn an_update_is_logged_once_and_a_message_change_once_per_member_page_by_page(
    store: Arc<dyn Store>,
) {
    use herald::domain::ConversationType;
    let acme = tenant("acme");
    let rows = |payload: &str| {
        [
            ("ann", "chat3:update", payload.to_owned()),
            ("ann", "message:update", payload.to_owned()),
        ]
    };
    store.append_update(&acme, "u1", &rows("1")).await.unwrap();
    store
        .append_update(&acme, "u1", &rows("again"))
        .await
        .unwrap();
    store.append_update(&acme, "u2", &rows("2")).await.unwrap();
    let logged = store.events_after(&acme, "ann", 0, 100).await.unwrap();
    let payloads: Vec<&str> = logged.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(
        payloads,
        ["1", "1", "2", "2"],
        "a redelivered update adds nothing"
    );
    assert!(
        store
            .events_after(&tenant("other"), "ann", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let members = ["ada", "bob", "cy"];
    store
        .put_conversation(&acme, "c1", ConversationType::Group, &members)
        .await
        .unwrap();
    let chat = herald::store::NewChat {
        message_id: "m1",
        conversation_id: "c1",
        sender_id: "cy",
        audience: Audience::Members { page: 2 },
        payload: serde_json::json!({"messageId": "m1"}),
    };
    store.record_chat(&acme, &chat).await.unwrap();
    let payload_for =
        |user: &str, chat: &herald::store::StoredChat| format!("{user}@{}", chat.conversation_id);
    let kinds = ["chat3:update", "message:update"];
    for _ in 0..2 {
        let changed = store
            .record_message_change(&acme, "m1", "e1", &kinds, 2, &payload_for)
            .await
            .unwrap()
            .expect("the message is stored");
        assert_eq!(changed.sent, herald::store::Sent::Members);
    }
    for user in members {
        let changes: Vec<String> = store
            .events_after(&acme, user, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind != "message:new")
            .map(|e| e.payload)
            .collect();
        let mine = format!("{user}@c1");
        assert_eq!(
            changes,
            [mine.clone(), mine],
            "{user}: each name once, sender included"
        );
    }
    let unknown = store
        .record_message_change(&acme, "nope", "e2", &kinds, 2, &payload_for)
        .await
        .unwrap();
    assert!(unknown.is_none());
}

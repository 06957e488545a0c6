//! A test's table: created as template.yaml declares it, and read or written directly (not
//! through the function) to check what the function stored.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

use super::TestEnv;

/// The test's table as template.yaml declares it: key `id`, the owner index.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) {
    create_table_keyed(client, table, "id", None).await;
}

/// A table with the owner index and this key schema: `partition_key` (a string) and an optional
/// sort key (name, type), as a griptape table may have.
pub async fn create_table_keyed(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    partition_key: &str,
    sort_key: Option<(&str, ScalarAttributeType)>,
) {
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .expect("attribute definition")
    };
    let mut create = client
        .create_table()
        .table_name(table)
        .key_schema(key(partition_key, KeyType::Hash))
        .attribute_definitions(attribute(partition_key, ScalarAttributeType::S))
        .attribute_definitions(attribute("owner_key", ScalarAttributeType::S))
        .attribute_definitions(attribute("active_ms", ScalarAttributeType::N))
        .global_secondary_indexes(owner_index())
        .billing_mode(BillingMode::PayPerRequest);
    if let Some((name, kind)) = sort_key {
        create = create
            .key_schema(key(name, KeyType::Range))
            .attribute_definitions(attribute(name, kind));
    }
    table_created(create.send().await);
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("key schema")
}

/// A CreateTable the SDK retried (the first attempt answered late on a busy machine) meets its
/// own table: that is success.
fn table_created<T, R: std::fmt::Debug>(
    result: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::create_table::CreateTableError,
            R,
        >,
    >,
) {
    match result {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) => {}
        Err(e) => panic!("create table: {e:?}"),
    }
}

/// The owner index as the code reads it (`store::attr`); the template test checks that
/// template.yaml declares the same.
pub fn owner_index() -> aws_sdk_dynamodb::types::GlobalSecondaryIndex {
    use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, Projection, ProjectionType};
    use session_chat::store::attr;
    let projected = attr::INDEX_PROJECTION.iter().map(|a| a.to_string());
    GlobalSecondaryIndex::builder()
        .index_name("by_owner")
        .key_schema(key(attr::OWNER_KEY, KeyType::Hash))
        .key_schema(key(attr::ACTIVE_MS, KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(projected.collect()))
                .build(),
        )
        .build()
        .expect("owner index")
}

impl TestEnv {
    pub async fn item(&self, session_id: &str) -> Option<HashMap<String, AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(session_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("get item")
            .item
    }

    /// The stored `value` JSON of a session.
    pub async fn value(&self, session_id: &str) -> Option<String> {
        self.item(session_id)
            .await
            .map(|item| item["value"].as_s().expect("value is a string").clone())
    }

    pub async fn item_count(&self) -> usize {
        self.dynamodb
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default()
            .len()
    }

    /// The keys of every item in the table.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .dynamodb
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            for item in out.items.unwrap_or_default() {
                keys.push(item["id"].as_s().unwrap().clone());
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return keys;
            }
        }
    }

    /// Session items (the recipe's, keys without `#`); the rest are the side items beside
    /// them (heads, slots, pages, parts, receipts), keyed `<session>#...`.
    pub async fn session_count(&self) -> usize {
        self.keys()
            .await
            .iter()
            .filter(|k| !k.contains('#'))
            .count()
    }

    /// A session as the item layout of earlier releases (before 2026-12-07) stored it, written
    /// directly: the seed's memory JSON in `value` holding its newest `in_item` runs, the older
    /// ones in pages of `per_page` runs. With `legacy`, as the earliest releases kept it (no
    /// generation, `archived` pages at `<session>#archive#<n:08>` whose run numbers nobody
    /// recorded); else with a generation and `pages` naming each page's first run. The runs are
    /// `m<i>` answered `r<i>`; their ids, oldest first.
    pub async fn put_item_layout(
        &self,
        session_id: &str,
        runs: usize,
        (in_item, per_page): (usize, usize),
        legacy: bool,
    ) -> Vec<String> {
        let ids: Vec<String> = (0..runs).map(|i| format!("{i:032x}")).collect();
        let memory = |range: std::ops::Range<usize>| {
            let runs: Vec<serde_json::Value> = range
                .map(|i| serde_json::json!({"type": "Run", "id": ids[i], "input": format!("m{i}"), "output": format!("r{i}")}))
                .collect();
            serde_json::json!({"type": "ConversationMemory", "runs": runs, "max_runs": null})
                .to_string()
        };
        let first_run = runs - in_item;
        let generation = if legacy {
            "archive"
        } else {
            "0123456789abcdef0123456789abcdef"
        };
        let mut pages = Vec::new();
        for (n, start) in (0..first_run).step_by(per_page).enumerate() {
            let page = n as u64 + 1;
            let end = (start + per_page).min(first_run);
            let mut put = self
                .dynamodb
                .put_item()
                .table_name(&self.table)
                .item(
                    "id",
                    AttributeValue::S(format!("{session_id}#{generation}#{page:08}")),
                )
                .item("value", AttributeValue::S(memory(start..end)));
            if !legacy {
                put = put
                    .item("kind", AttributeValue::S("runs".into()))
                    .item("first", AttributeValue::N(start.to_string()));
            }
            put.send().await.expect("put page");
            pages.push(format!("{page}:{start}"));
        }
        let n = |v: usize| AttributeValue::N(v.to_string());
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(session_id.to_owned()))
            .item("value", AttributeValue::S(memory(first_run..runs)))
            .item("version", n(runs))
            .item("run_count", n(runs))
            .item("session_id", AttributeValue::S(session_id.to_owned()));
        put = if legacy {
            put.item("archived", n(pages.len()))
        } else {
            let last = ids[runs.saturating_sub(16)..]
                .iter()
                .map(|i| AttributeValue::S(i.clone()));
            put.item("generation", AttributeValue::S(generation.into()))
                .item("first_run", n(first_run))
                .item("pages", AttributeValue::S(pages.join(",")))
                .item("pages_next", n(pages.len() + 1))
                .item("last_runs", AttributeValue::L(last.collect()))
        };
        put.send().await.expect("put session item");
        ids
    }

    pub async fn put_value(&self, session_id: &str, value: &str) {
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(session_id.to_owned()))
            .item("value", AttributeValue::S(value.to_owned()))
            .send()
            .await
            .expect("put item");
    }
}

/// Every item whose key starts with `prefix`, by key.
pub async fn items_with_prefix(
    env: &TestEnv,
    prefix: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = env
            .dynamodb
            .scan()
            .table_name(&env.table)
            .filter_expression("begins_with(id, :p)")
            .expression_attribute_values(":p", AttributeValue::S(prefix.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    items.sort_by(|a, b| a["id"].as_s().unwrap().cmp(b["id"].as_s().unwrap()));
    items
}

//! The shared ledger's rows in a DynamoDB table.
//!
//! One item per object, keyed by its account/kind/region prefix `p` (partition) and the
//! rest of its key `k` (sort), so that one `Query` reads every row of a prefix (what a
//! listing split among shippers will need) and no partition is hot (a region's prefix gets
//! a file every few minutes). The item carries its whole `id`, `ver` (the row version every
//! write is conditioned on),
//! `e` (the entry's bytes, as the local ledger stores them), `own` and `lc` (the lease),
//! `exp` (the TTL attribute: done rows only). Open rows also carry `q` = `open` and `due`
//! (their `not_before`), which put them in the sparse index `open-due`: a requeue queries
//! the open rows alone, never the whole table. Settings are items in partition `~setting`.
//!
//! The table is created on first start when missing (on-demand billing, TTL on `exp`).
//! Calls block the calling thread: the ledger's API is synchronous (the local ledger is a
//! file), and each call here is one request of a few milliseconds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

use super::items::{item, key_of, lease_item, lease_key, lease_partition, lease_row, number, row};
use super::table::{LeaseKind, LeaseRow, Row, Table, TableError};

const INDEX: &str = "open-due";
const SETTING: &str = "~setting";

/// Whether a write failed its condition (another writer came first), not the request.
fn lost_race<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// Requests made, by kind: the cost the README's formula predicts.
#[derive(Debug, Default)]
pub struct Requests {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub queries: AtomicU64,
}

/// A DynamoDB table holding the shared ledger.
#[derive(Debug)]
pub struct DynamoTable {
    client: Client,
    name: String,
    /// The table's own runtime (one thread): its requests make progress whatever the
    /// engine's threads are doing. On the engine's runtime, a request made while every
    /// worker waited (on the SQS tracker's lock, held by the caller) would never be driven.
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
    pub requests: Requests,
}

impl Drop for DynamoTable {
    fn drop(&mut self) {
        // Without waiting: the ledger may be dropped on one of the engine's threads,
        // where a blocking shutdown would panic.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn fail(what: &str, e: impl std::error::Error) -> TableError {
    TableError(format!("{what}: {}", DisplayErrorContext(e)))
}

impl DynamoTable {
    /// Opens the table, creating it when missing and waiting until it is active.
    pub fn open(client: Client, name: &str) -> Result<Self, TableError> {
        Self::open_with(|_| Ok(client), name, true)
    }

    /// Opens an existing table for an operator's command (`status`, `retry`): credentials
    /// and region from the SDK's default chain (or `region`), at `endpoint` when given.
    pub fn open_existing(
        name: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, TableError> {
        Self::open_with(
            |rt| {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(r) = region {
                    loader = loader.region(aws_config::Region::new(r.to_string()));
                }
                let sdk = rt.block_on(loader.load());
                Ok(crate::aws::client::dynamodb(&sdk, endpoint))
            },
            name,
            false,
        )
    }

    fn open_with(
        client: impl FnOnce(&tokio::runtime::Runtime) -> Result<Client, TableError>,
        name: &str,
        create: bool,
    ) -> Result<Self, TableError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cloudtrail-s3-ledger")
            .enable_all()
            .build()
            .map_err(|e| TableError(format!("starting the ledger's thread: {e}")))?;
        let t = Self {
            client: client(&runtime)?,
            name: name.to_string(),
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            requests: Requests::default(),
        };
        t.block(t.ensure(create))?;
        Ok(t)
    }

    /// Runs a request to completion on the table's runtime for a synchronous caller: the
    /// host's thread, a blocking task, or (moved aside with `block_in_place`) one of the
    /// engine's workers.
    /// Stores `item` if the stored version is `expected` (`None`: no item): `Ok(false)`
    /// when another writer came first.
    fn put_if(
        &self,
        item: HashMap<String, AttributeValue>,
        expected: Option<u64>,
        what: impl Fn() -> String,
    ) -> Result<bool, TableError> {
        self.requests.writes.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item));
        req = match expected {
            None => req.condition_expression("attribute_not_exists(p)"),
            Some(v) => req
                .condition_expression("ver = :v")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
        };
        match self.block(req.send()) {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(lost_race) => Ok(false),
            Err(e) => Err(fail(&what(), e)),
        }
    }

    fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.handle.block_on(f))
            }
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| self.handle.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            Err(_) => self.handle.block_on(f),
        }
    }

    async fn ensure(&self, create: bool) -> Result<(), TableError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await;
        match described {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                if !create {
                    return Err(TableError(format!(
                        "table {} does not exist (check the name: it is the 'ledger.dynamodb_table' setting, and the region)",
                        self.name
                    )));
                }
                self.create().await?;
            }
            Err(e) => return Err(fail(&format!("describing table {}", self.name), e)),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let d = self
                .client
                .describe_table()
                .table_name(&self.name)
                .send()
                .await
                .map_err(|e| fail(&format!("describing table {}", self.name), e))?;
            let status = d.table().and_then(|t| t.table_status().cloned());
            if status == Some(TableStatus::Active) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TableError(format!(
                    "table {} not active after 5 minutes ({status:?})",
                    self.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !create {
            return Ok(());
        }
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.name)
            .send()
            .await
            .map_err(|e| fail(&format!("describing the TTL of table {}", self.name), e))?;
        let on = ttl
            .time_to_live_description()
            .and_then(|d| d.attribute_name())
            == Some("exp");
        if !on {
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("exp")
                .build()
                .map_err(|e| fail("TTL", e))?;
            if let Err(e) = self
                .client
                .update_time_to_live()
                .table_name(&self.name)
                .time_to_live_specification(spec)
                .send()
                .await
            {
                // Another shipper starting at the same moment may have turned it on first:
                // look again rather than read the error's words.
                let now_on = self
                    .client
                    .describe_time_to_live()
                    .table_name(&self.name)
                    .send()
                    .await
                    .ok()
                    .and_then(|d| {
                        d.time_to_live_description()
                            .and_then(|t| t.attribute_name())
                            .map(|a| a == "exp")
                    })
                    .unwrap_or(false);
                if !now_on {
                    return Err(fail(
                        &format!("turning on the TTL of table {}", self.name),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    async fn create(&self) -> Result<(), TableError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(|e| fail("table definition", e))
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(|e| fail("table definition", e))
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(INDEX)
            .key_schema(key("q", KeyType::Hash)?)
            .key_schema(key("due", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(|e| fail("table definition", e))?;
        let created = self
            .client
            .create_table()
            .table_name(&self.name)
            .attribute_definitions(attr("p", ScalarAttributeType::S)?)
            .attribute_definitions(attr("k", ScalarAttributeType::S)?)
            .attribute_definitions(attr("q", ScalarAttributeType::S)?)
            .attribute_definitions(attr("due", ScalarAttributeType::N)?)
            .key_schema(key("p", KeyType::Hash)?)
            .key_schema(key("k", KeyType::Range)?)
            .global_secondary_indexes(index)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another shipper created it first.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(fail(&format!("creating table {}", self.name), e)),
        }
    }
}

impl Table for DynamoTable {
    fn get(&self, id: &str) -> Result<Option<Row>, TableError> {
        self.requests.reads.fetch_add(1, Ordering::Relaxed);
        let out = self
            .block(
                self.client
                    .get_item()
                    .table_name(&self.name)
                    .set_key(Some(key_of(id)))
                    .consistent_read(true)
                    .send(),
            )
            .map_err(|e| fail(&format!("reading {id}"), e))?;
        match out.item() {
            None => Ok(None),
            // Not "no row": a create would fail its condition for ever.
            Some(item) => row(item).map(|(_, r)| Some(r)).ok_or_else(|| {
                TableError(format!(
                    "the row of {id} is not in a form this version reads (a newer release's, or damaged)"
                ))
            }),
        }
    }

    fn put(&self, id: &str, expected: Option<u64>, r: &Row) -> Result<bool, TableError> {
        self.put_if(item(id, r), expected, || format!("writing {id}"))
    }

    fn open_due(
        &self,
        now: u32,
        limit: usize,
        keep: &mut dyn FnMut(&str, &Row) -> bool,
    ) -> Result<Vec<(String, Row)>, TableError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            self.requests.queries.fetch_add(1, Ordering::Relaxed);
            let page = self
                .block(
                    self.client
                        .query()
                        .table_name(&self.name)
                        .index_name(INDEX)
                        .key_condition_expression("q = :o AND due <= :now")
                        .expression_attribute_values(":o", AttributeValue::S("open".into()))
                        .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                        .set_exclusive_start_key(start)
                        .send(),
                )
                .map_err(|e| fail("querying open entries", e))?;
            out.extend(
                page.items()
                    .iter()
                    .filter_map(row)
                    .filter(|(id, r)| keep(id, r)),
            );
            start = page.last_evaluated_key().cloned();
            if start.is_none() || out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Row)>, TableError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            self.requests.queries.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start);
            if !prefix.is_empty() {
                req = req
                    .filter_expression("begins_with(id, :p)")
                    .expression_attribute_values(":p", AttributeValue::S(prefix.into()));
            }
            let page = self
                .block(req.send())
                .map_err(|e| fail("scanning the table", e))?;
            out.extend(page.items().iter().filter_map(row));
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn setting_or(&self, name: &str, value: u64) -> Result<u64, TableError> {
        let what = format!("setting {name}");
        let key = HashMap::from([
            ("p".to_string(), AttributeValue::S(SETTING.into())),
            ("k".to_string(), AttributeValue::S(name.into())),
        ]);
        let mut item = key.clone();
        item.insert("val".into(), AttributeValue::N(value.to_string()));
        self.requests.writes.fetch_add(1, Ordering::Relaxed);
        let put = self.block(
            self.client
                .put_item()
                .table_name(&self.name)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(p)")
                .send(),
        );
        match put {
            Ok(_) => return Ok(value),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(fail(&format!("writing {what}"), e)),
        }
        self.requests.reads.fetch_add(1, Ordering::Relaxed);
        let out = self
            .block(
                self.client
                    .get_item()
                    .table_name(&self.name)
                    .set_key(Some(key))
                    .consistent_read(true)
                    .send(),
            )
            .map_err(|e| fail(&format!("reading {what}"), e))?;
        Ok(out.item().and_then(|m| number(m, "val")).unwrap_or(value))
    }
    fn rows_under(
        &self,
        prefix_id: &str,
        from: &str,
        below: Option<&str>,
    ) -> Result<Vec<(String, Row)>, TableError> {
        let rest = |id: &str| id.strip_prefix(prefix_id).unwrap_or("").to_string();
        let (from_id, below_id) = (from, below);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            self.requests.queries.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .client
                .query()
                .table_name(&self.name)
                .consistent_read(true)
                .expression_attribute_values(":p", AttributeValue::S(prefix_id.into()))
                .set_exclusive_start_key(start);
            // Key values may not be empty strings: an empty bound is no bound.
            let (from, below) = (rest(from), below.map(rest).filter(|b| !b.is_empty()));
            let condition = match (from.is_empty(), &below) {
                (true, None) => "p = :p",
                (false, None) => "p = :p AND k >= :f",
                (true, Some(_)) => "p = :p AND k < :b",
                (false, Some(_)) => "p = :p AND k BETWEEN :f AND :b",
            };
            req = req.key_condition_expression(condition);
            if !from.is_empty() {
                req = req.expression_attribute_values(":f", AttributeValue::S(from));
            }
            if let Some(b) = below {
                req = req.expression_attribute_values(":b", AttributeValue::S(b));
            }
            let page = self
                .block(req.send())
                .map_err(|e| fail(&format!("querying the rows of {prefix_id}"), e))?;
            out.extend(page.items().iter().filter_map(row).filter(|(id, _)| {
                id.as_str() >= from_id && below_id.is_none_or(|b| id.as_str() < b)
            }));
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    fn get_lease(&self, kind: LeaseKind, id: &str) -> Result<Option<LeaseRow>, TableError> {
        self.requests.reads.fetch_add(1, Ordering::Relaxed);
        let out = self
            .block(
                self.client
                    .get_item()
                    .table_name(&self.name)
                    .set_key(Some(lease_key(kind, id)))
                    .consistent_read(true)
                    .send(),
            )
            .map_err(|e| fail(&format!("reading the lease of {id}"), e))?;
        match out.item() {
            None => Ok(None),
            Some(item) => lease_row(item).map(|(_, r)| Some(r)).ok_or_else(|| {
                TableError(format!(
                    "the lease row of {id} is not in a form this version reads"
                ))
            }),
        }
    }

    fn put_lease(
        &self,
        kind: LeaseKind,
        id: &str,
        expected: Option<u64>,
        row: &LeaseRow,
    ) -> Result<bool, TableError> {
        self.put_if(lease_item(kind, id, row), expected, || {
            format!("writing the lease of {id}")
        })
    }

    fn leases(&self, kind: LeaseKind) -> Result<Vec<(String, LeaseRow)>, TableError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            self.requests.queries.fetch_add(1, Ordering::Relaxed);
            let page = self
                .block(
                    self.client
                        .query()
                        .table_name(&self.name)
                        .consistent_read(true)
                        .key_condition_expression("p = :p")
                        .expression_attribute_values(
                            ":p",
                            AttributeValue::S(lease_partition(kind).into()),
                        )
                        .set_exclusive_start_key(start)
                        .send(),
                )
                .map_err(|e| fail("querying the lease rows", e))?;
            out.extend(page.items().iter().filter_map(lease_row));
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

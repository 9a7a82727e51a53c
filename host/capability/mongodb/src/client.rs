//! The pooled MongoDB driver. It sends only `aggregate` (which also serves
//! find, count and distinct) and `connectionStatus`, each with `maxTimeMS`;
//! pipelines reach it only from [`silo_policy::document`]. Rows are decoded
//! straight from the cursor's raw BSON on the reader's task, without a
//! channel: the cursor itself is the stream.
use std::time::Duration;

use async_trait::async_trait;
use bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, Credential, ServerAddress, Tls, TlsOptions};
use mongodb::{Client, Cursor};
use secrecy::{ExposeSecret, SecretString};
use silo_types::{Column, ColumnType, Value};

use super::MongoConfig;
use super::codec;
use silo_bindings::rows::RowSource;
use silo_capability::driver::{self, ServerFailure};
use silo_core::batch::Batch;
use silo_core::error::{Error, Result};
use silo_core::limits::{BATCH_BYTES, BATCH_ROWS};
use silo_policy::document::{Find, Read};

/// How long to look for a reachable server before calling it unavailable.
const SELECT_TIMEOUT: Duration = Duration::from_secs(5);
/// MongoDB's error code for an operation that ran past `maxTimeMS`.
const MAX_TIME_EXPIRED: i32 = 50;
/// MongoDB's error code for an operation the user holds no privilege for.
const UNAUTHORIZED: i32 = 13;

/// The driver reads trusted roots from a file: `pem` in an owner-only file
/// named by its hash, in a directory this process created itself (fresh,
/// with a random name, so nobody else can have prepared or can swap it).
fn ca_file(pem: &[u8]) -> Result<std::path::PathBuf> {
    use sha2::Digest;
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let io = |e: std::io::Error| Error::Internal(format!("writing a CA file: {e}"));
    let dir = match DIR.get() {
        Some(dir) => dir,
        None => {
            let dir = std::env::temp_dir().join(silo_core::ids::new_id("silo-ca")?);
            let mut b = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            // Not recursive: fails if the name exists.
            b.create(&dir).map_err(io)?;
            DIR.get_or_init(|| dir)
        }
    };
    let file = dir.join(format!("{}.pem", hex::encode(sha2::Sha256::digest(pem))));
    if !file.exists() {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let partial = dir.join(silo_core::ids::new_id("partial")?);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut f = options.open(&partial).map_err(io)?;
        f.write_all(pem).map_err(io)?;
        std::fs::rename(&partial, &file).map_err(io)?;
    }
    Ok(file)
}

/// A MongoDB datasource's connection pool.
pub struct MongoClient {
    client: Client,
    database: String,
    max_time: Duration,
    max_row_bytes: u64,
    fetch_share: usize,
}

impl MongoClient {
    /// Builds the pool; connections are opened lazily.
    pub fn new(
        config: &MongoConfig,
        password: Option<SecretString>,
        limits: &silo_core::limits::Limits,
        net: &silo_capability::net::NetPolicy,
    ) -> Result<MongoClient> {
        use silo_capability::net::Purpose;
        // With TLS the certificate names the host: check the policy on what
        // it resolves to, and connect by name. Without, pin the address.
        let tls = config.tls.client(&config.host)?;
        if config.tls.server_name.is_some() {
            return Err(Error::Config(
                "mongodb: tls.server_name is not supported; the certificate is checked against \
                 `host`"
                    .into(),
            ));
        }
        let host = if tls.is_some() {
            if !net.is_open() {
                net.resolve_blocking(&config.host, config.port, Purpose::Database)?;
            }
            config.host.clone()
        } else {
            net.pin(&config.host, config.port, Purpose::Database)?
        };
        let credential = Credential::builder()
            .username(config.user.clone())
            .password(password.map(|p| p.expose_secret().to_owned()))
            .source(
                config
                    .auth_source
                    .clone()
                    .unwrap_or_else(|| config.database.clone()),
            )
            .build();
        let (pool, fetch_share) =
            silo_capability::pool_bounds(config.pool_size, config.fetch_connections)?;
        let pool = u32::try_from(pool)
            .map_err(|_| Error::Config("mongodb pool_size is too large".into()))?;
        let options = ClientOptions::builder()
            .hosts(vec![ServerAddress::Tcp {
                host,
                port: Some(config.port),
            }])
            .credential(credential)
            .tls(match &tls {
                None => Tls::Disabled,
                Some(t) => Tls::Enabled(
                    TlsOptions::builder()
                        .allow_invalid_certificates(
                            t.mode == silo_capability::tls::TlsMode::Require,
                        )
                        .ca_file_path(t.ca_pem.as_deref().map(ca_file).transpose()?)
                        .build(),
                ),
            })
            // Only the server the policy checked: a replica set's member
            // list comes from the server, which must not choose where the
            // host connects.
            .direct_connection(true)
            .max_pool_size(pool)
            .server_selection_timeout(SELECT_TIMEOUT)
            .connect_timeout(SELECT_TIMEOUT)
            .retry_reads(false)
            .app_name("silo".to_owned())
            .build();
        let client = Client::with_options(options).map_err(|e| {
            tracing::warn!("mongodb client options: {e}");
            Error::Config("invalid mongodb connection settings".into())
        })?;
        Ok(MongoClient {
            client,
            database: config.database.clone(),
            max_time: limits.statement_timeout,
            max_row_bytes: limits.max_row_bytes,
            fetch_share,
        })
    }

    /// Cursors one fetch may hold open at once.
    pub fn fetch_share(&self) -> usize {
        self.fetch_share
    }

    /// The database holding the governed collections.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Runs an already-governed pipeline; rows are the top-level `fields`.
    pub async fn aggregate(
        &self,
        collection: &str,
        pipeline: Vec<Document>,
        fields: Vec<String>,
    ) -> Result<Box<dyn RowSource>> {
        let cursor = self.cursor(collection, pipeline).await?;
        stream(cursor, fields, self.max_row_bytes).await
    }

    /// Runs an already-governed read; rows are the top-level `fields`.
    pub async fn read(
        &self,
        collection: &str,
        read: Read,
        fields: Vec<String>,
    ) -> Result<Box<dyn RowSource>> {
        match read {
            Read::Find(find) => self.find(collection, find, fields).await,
            Read::Aggregate(pipeline) => self.aggregate(collection, pipeline, fields).await,
        }
    }

    async fn find(
        &self,
        collection: &str,
        find: Find,
        fields: Vec<String>,
    ) -> Result<Box<dyn RowSource>> {
        let coll = self
            .client
            .database(&self.database)
            .collection::<Document>(collection);
        let mut action = coll
            .find(find.filter)
            .projection(find.projection)
            .max_time(self.max_time)
            .allow_disk_use(false);
        if let Some(n) = find.limit {
            action = action.limit(n);
        }
        let cursor = action.await.map_err(failure)?;
        stream(cursor, fields, self.max_row_bytes).await
    }

    /// Runs an already-governed pipeline expected to return a few documents,
    /// and returns at most `max` of them.
    pub async fn aggregate_small(
        &self,
        collection: &str,
        pipeline: Vec<Document>,
        max: usize,
    ) -> Result<Vec<bson::RawDocumentBuf>> {
        let mut cursor = self.cursor(collection, pipeline).await?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(failure)? {
            if out.len() == max {
                return Err(Error::Limit(format!(
                    "the result has more than {max} documents"
                )));
            }
            out.push(cursor.current().to_owned());
        }
        Ok(out)
    }

    /// Field names and types seen in up to `size` random documents.
    pub async fn sample_fields(&self, collection: &str, size: u32) -> Result<Vec<Column>> {
        let pipeline = vec![doc! { "$sample": { "size": i64::from(size) } }];
        let docs = self
            .aggregate_small(collection, pipeline, size as usize)
            .await?;
        let mut columns: Vec<Column> = Vec::new();
        for (n, d) in docs.iter().enumerate() {
            for element in d.iter() {
                let Ok((key, value)) = element else { break };
                let key = key.as_str();
                let kind = codec::column_type(value);
                match columns.iter_mut().find(|c| c.name == key) {
                    Some(c) => match kind {
                        Some(k) => c.kind = codec::unify(c.kind, k),
                        None => c.nullable = true,
                    },
                    None => columns.push(Column {
                        name: key.to_owned(),
                        kind: kind.unwrap_or(ColumnType::Text),
                        // Absent from an earlier document, or null here.
                        nullable: n > 0 || kind.is_none(),
                    }),
                }
            }
            for c in &mut columns {
                if d.get(&c.name).ok().flatten().is_none() {
                    c.nullable = true;
                }
            }
        }
        Ok(columns)
    }

    /// The roles and privileges the configured user holds, as the server
    /// reports them (`connectionStatus` with `showPrivileges`).
    pub async fn connection_status(&self) -> Result<Document> {
        self.client
            .database(&self.database)
            .run_command(doc! { "connectionStatus": 1, "showPrivileges": true })
            .await
            .map_err(failure)
    }

    /// What the user may do beyond reading `database` (see
    /// [`silo_capability::registration`]).
    pub async fn write_privileges(&self) -> Result<Vec<String>> {
        let status = self.connection_status().await?;
        Ok(silo_capability::registration::mongo_offending(
            &status,
            &self.database,
        ))
    }

    async fn cursor(&self, collection: &str, pipeline: Vec<Document>) -> Result<Cursor<Document>> {
        self.client
            .database(&self.database)
            .collection::<Document>(collection)
            .aggregate(pipeline)
            .max_time(self.max_time)
            .allow_disk_use(false)
            .await
            .map_err(failure)
    }
}

/// A cursor as a row source. The first document types the columns; it is
/// kept as the first row.
async fn stream(
    mut cursor: Cursor<Document>,
    fields: Vec<String>,
    max_row_bytes: u64,
) -> Result<Box<dyn RowSource>> {
    let first = if cursor.advance().await.map_err(failure)? {
        let doc = cursor.current();
        check_size(doc, max_row_bytes)?;
        Some(doc.to_owned())
    } else {
        None
    };
    let columns = fields
        .iter()
        .map(|name| Column {
            name: name.clone(),
            kind: first
                .as_ref()
                .and_then(|d| d.get(name).ok().flatten())
                .and_then(codec::column_type)
                .unwrap_or(ColumnType::Text),
            nullable: true,
        })
        .collect();
    let mut pending = Batch::with_capacity(fields.len(), 1);
    if let Some(d) = first {
        pending.push_row_with(|cells| codec::fill_row(&d, &fields, cells));
    }
    Ok(Box::new(DocumentStream {
        cursor: Some(cursor),
        fields,
        columns,
        pending,
        max_row_bytes,
    }))
}

/// A document larger than `max_row_bytes` is refused (BSON caps every
/// document at 16 MiB anyway).
fn check_size(doc: &bson::RawDocument, max_row_bytes: u64) -> Result<()> {
    if doc.as_bytes().len() as u64 > max_row_bytes {
        return Err(driver::row_too_large(max_row_bytes));
    }
    Ok(())
}

/// Words a driver failure the way every capability does.
fn failure(e: mongodb::error::Error) -> Error {
    use mongodb::error::ErrorKind;
    match &*e.kind {
        ErrorKind::Command(c) if c.code == MAX_TIME_EXPIRED => ServerFailure::Timeout.into(),
        ErrorKind::Command(c) if c.code == UNAUTHORIZED => ServerFailure::ReadOnly.into(),
        ErrorKind::Command(c) => ServerFailure::Other {
            message: &c.message,
            code: &c.code_name,
        }
        .into(),
        _ => driver::unavailable("mongodb", &e),
    }
}

/// A cursor as a row source.
struct DocumentStream {
    cursor: Option<Cursor<Document>>,
    fields: Vec<String>,
    columns: Vec<Column>,
    /// The first document, read to type the columns.
    pending: Batch,
    max_row_bytes: u64,
}

#[async_trait]
impl RowSource for DocumentStream {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>> {
        let mut rows = Batch::with_capacity(self.fields.len(), max.min(BATCH_ROWS as usize));
        rows.append(&mut self.pending);
        // Handed over at the rows asked for or at BATCH_BYTES of documents.
        let mut bytes = 0u64;
        while rows.len() < max && bytes < BATCH_BYTES {
            let Some(cursor) = self.cursor.as_mut() else {
                break;
            };
            if !cursor.advance().await.map_err(failure)? {
                self.cursor = None;
                break;
            }
            let doc = cursor.current();
            check_size(doc, self.max_row_bytes)?;
            bytes += doc.as_bytes().len() as u64;
            rows.push_row_with(|cells| codec::fill_row(doc, &self.fields, cells));
        }
        Ok((!rows.is_empty()).then_some(rows))
    }
}

/// A `$count` result's number.
pub(crate) fn count_of(doc: &bson::RawDocument) -> u64 {
    match doc.get("n").ok().flatten() {
        Some(bson::RawBsonRef::Int32(n)) => u64::try_from(n).unwrap_or(0),
        Some(bson::RawBsonRef::Int64(n)) => u64::try_from(n).unwrap_or(0),
        _ => 0,
    }
}

/// A `$group` by field result's key.
pub(crate) fn group_key(doc: &bson::RawDocument) -> Value {
    doc.get("_id")
        .ok()
        .flatten()
        .map_or(Value::Null, codec::value_of)
}

/// Parses Extended JSON text from a connector.
pub(crate) fn parse_json(text: &str) -> Result<Bson> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::Connector(format!("not valid JSON: {e}")))?;
    Bson::try_from(json).map_err(|e| Error::Connector(format!("not valid Extended JSON: {e}")))
}

//! Describe from a SQL catalog: the same grouping for every SQL connector.
use crate::{Column, ColumnType, Dataset, Error, Row, Value};

/// Groups catalog rows `(schema, table, column, data_type, is_nullable)`,
/// ordered by schema and table, into datasets named `schema.table`. Each
/// `data_type` is mapped by `column_type`; a column it maps to `None` is left
/// out rather than guessed.
pub fn datasets_from_catalog(
    rows: Vec<Row>,
    column_type: impl Fn(&str) -> Option<ColumnType>,
) -> Result<Vec<Dataset>, Error> {
    let text = |v: &Value| match v {
        Value::Text(s) => Ok(s.clone()),
        _ => Err(Error::Connector("catalog column is not text".into())),
    };
    let mut datasets: Vec<Dataset> = Vec::new();
    for row in rows {
        let [schema, table, column, data_type, nullable] = row.as_slice() else {
            return Err(Error::Connector(
                "catalog row has an unexpected shape".into(),
            ));
        };
        let Some(kind) = column_type(&text(data_type)?.to_lowercase()) else {
            continue;
        };
        // Fully qualified; the host shows names relative to the datasource schema.
        let name = format!("{}.{}", text(schema)?, text(table)?);
        let column = Column {
            name: text(column)?,
            kind,
            nullable: text(nullable)? == "YES",
        };
        match datasets.last_mut() {
            Some(d) if d.name == name => d.columns.push(column),
            _ => datasets.push(Dataset {
                name,
                columns: vec![column],
            }),
        }
    }
    Ok(datasets)
}

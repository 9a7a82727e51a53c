// A Silo SQL connector for Postgres, in JavaScript.
//
// Built into a WebAssembly component with componentize-js (`silo connector
// build`, or `npm run build`): the WIT in `wit/` is Silo's contract, the
// `sql-connector` world. Like the Rust connector, `describe` reads the
// catalog views the host opens while describing, and `fetch` pushes the
// projection, the embed user's row filter and the limit down as one
// parameterised statement, then hands the host's row stream straight back:
// rows go from Postgres to the caller without entering this sandbox. The
// host rewrites the statement so every governed table is already filtered,
// and re-checks every row, whatever this code does.
import { query } from 'silo:connector/sql@0.1.0';

// Columns of every table the read-only role may SELECT.
const CATALOG = `SELECT c.table_schema::text, c.table_name::text, c.column_name::text,
  c.data_type::text, c.is_nullable::text
  FROM information_schema.columns c
  WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')
  AND EXISTS (SELECT 1 FROM information_schema.table_privileges p
    WHERE p.table_schema = c.table_schema AND p.table_name = c.table_name
    AND p.privilege_type = 'SELECT')
  ORDER BY 1, 2, c.ordinal_position`;

// Postgres type names to Silo column types; other columns are left out.
const TYPES = {
  boolean: 'boolean',
  smallint: 'int', integer: 'int', bigint: 'int',
  real: 'float', 'double precision': 'float',
  numeric: 'decimal',
  text: 'text', 'character varying': 'text', character: 'text', name: 'text', uuid: 'text',
  bytea: 'bytes',
  date: 'date',
  'timestamp without time zone': 'timestamp', 'timestamp with time zone': 'timestamp',
  json: 'json', jsonb: 'json',
};

const SYMBOLS = {
  eq: '=', ne: '<>', lt: '<', le: '<=', gt: '>', ge: '>=',
  in: 'IN', 'not-in': 'NOT IN', 'is-null': 'IS NULL', 'not-null': 'IS NOT NULL',
};

// "name", with embedded quotes doubled: identifiers are never spliced raw.
function ident(name) {
  return `"${name.replaceAll('"', '""')}"`;
}

// The row filter as a condition with $n placeholders; values go in `params`.
function where(filter, params) {
  if (filter.tag === 'all-rows') return '(TRUE)';
  if (filter.tag === 'no-rows' || filter.val.length === 0) return '(FALSE)';
  const placeholder = (value) => {
    params.push(value);
    return `$${params.length}`;
  };
  const branches = filter.val.map((conjunction) => {
    if (conjunction.length === 0) return 'TRUE';
    const predicates = conjunction.map(({ column, op, values }) => {
      const symbol = SYMBOLS[op];
      if (op === 'is-null' || op === 'not-null') return `${ident(column)} ${symbol}`;
      if (op === 'in' || op === 'not-in') {
        return `${ident(column)} ${symbol} (${values.map(placeholder).join(', ')})`;
      }
      return `${ident(column)} ${symbol} ${placeholder(values[0])}`;
    });
    return `(${predicates.join(' AND ')})`;
  });
  return `(${branches.join(' OR ')})`;
}

// Every row of a small host stream (the catalog), batch by batch.
function collect(stream) {
  const rows = [];
  for (;;) {
    const batch = stream.nextBatch(1024);
    if (batch === undefined) return rows;
    rows.push(...batch);
  }
}

export const connector = {
  // Rows this connector builds itself; it never does (it forwards streams).
  Batches: class {
    next() {
      return undefined;
    }
  },

  describe() {
    const datasets = [];
    for (const row of collect(query(CATALOG, []))) {
      const [schema, table, column, type, nullable] = row.map((cell) => cell.val);
      const kind = TYPES[type.toLowerCase()];
      if (kind === undefined) continue;
      const name = `${schema}.${table}`;
      let last = datasets[datasets.length - 1];
      if (last === undefined || last.name !== name) {
        last = { name, columns: [] };
        datasets.push(last);
      }
      last.columns.push({ name: column, kind, nullable: nullable === 'YES' });
    }
    return datasets;
  },

  fetch(request) {
    if (request.columns.length === 0) {
      throw { tag: 'invalid-request', val: 'no columns requested' };
    }
    const params = [];
    const table = request.dataset.split('.').map(ident).join('.');
    const columns = request.columns.map(ident).join(', ');
    let sql = `SELECT ${columns} FROM ${table} WHERE ${where(request.filter, params)}`;
    if (request.limit !== undefined) sql += ` LIMIT ${request.limit}`;
    return { tag: 'forward', val: query(sql, params) };
  },
};

//! Row-filter rules as written in `silo.toml`:
//!
//! ```toml
//! [datasets.orders]
//! datasource = "main"
//! # Each entry is one conjunction ("and"); entries are ORed.
//! row_filter = ["tenant = {{user.tenant}} and amount < 10000", "region in ('eu', 'us')"]
//! ```
//!
//! Values are literals (`'text'`, numbers, `true`/`false`) or `{{user.attr}}`,
//! which is resolved from the embed user's attributes into a bind value. A
//! missing attribute is an error: a filter is never silently widened.
use std::collections::BTreeMap;

use silo_types::{Op, Predicate, RowFilter, Value, time};

/// One operand as written: a literal, or an attribute of the embed user.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Lit(Value),
    Attr(String),
}

#[derive(Debug, Clone, PartialEq)]
/// One `column op value` of a rule.
pub struct PredicateRule {
    column: String,
    op: Op,
    terms: Vec<Term>,
}

/// A dataset's row-filter policy, unresolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Every row (explicit `all_rows = true`).
    AllRows,
    /// Conjunctions ORed together; empty means no rows.
    AnyOf(Vec<Vec<PredicateRule>>),
}

/// An embed user's attributes: each a list of values (a scalar is a list of one).
pub type Attributes = BTreeMap<String, Vec<Value>>;

impl Policy {
    /// Parses each rule as one conjunction.
    pub fn parse(rules: &[String]) -> Result<Policy, String> {
        rules
            .iter()
            .map(|r| parse_conjunction(r).map_err(|e| format!("row filter `{r}`: {e}")))
            .collect::<Result<_, _>>()
            .map(Policy::AnyOf)
    }

    /// The filter for one user. `Err` names the missing or unusable attribute.
    pub fn resolve(&self, attrs: &Attributes) -> Result<RowFilter, String> {
        let any = match self {
            Policy::AllRows => return Ok(RowFilter::AllRows),
            Policy::AnyOf(any) => any,
        };
        let mut out = Vec::with_capacity(any.len());
        'conj: for conj in any {
            let mut preds = Vec::with_capacity(conj.len());
            for p in conj {
                let mut values = Vec::new();
                for t in &p.terms {
                    match t {
                        Term::Lit(v) => values.push(v.clone()),
                        Term::Attr(name) => {
                            let vals = attrs
                                .get(name)
                                .ok_or_else(|| format!("the user has no attribute `{name}`"))?;
                            values.extend(vals.iter().cloned());
                        }
                    }
                }
                match p.op.arity() {
                    Some(n) if values.len() != n => {
                        return Err(format!(
                            "`{}` {} needs {n} value(s), the user's attributes give {}",
                            p.column,
                            p.op.symbol(),
                            values.len()
                        ));
                    }
                    // `x IN ()` holds for no row, so neither does this conjunction.
                    None if values.is_empty() && p.op == Op::In => continue 'conj,
                    // `x NOT IN ()` holds for every row.
                    None if values.is_empty() => continue,
                    _ => {}
                }
                preds.push(Predicate {
                    column: p.column.clone(),
                    op: p.op,
                    values,
                });
            }
            out.push(preds);
        }
        Ok(RowFilter::AnyOf(out))
    }
}

/// Converts a TOML attribute value: scalars become one value, arrays many.
pub fn attribute_values(v: &toml::Value) -> Result<Vec<Value>, String> {
    Ok(match v {
        toml::Value::Array(items) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| "arrays may hold only scalars".to_owned()))
            .collect::<Result<_, _>>()?,
        other => vec![
            scalar(other)
                .ok_or_else(|| "attributes must be scalars or arrays of scalars".to_owned())?,
        ],
    })
}

/// Converts a JSON attribute value (from the API) as [`attribute_values`]
/// does a TOML one: strings, numbers and booleans, or arrays of them.
pub fn json_attribute_values(v: &serde_json::Value) -> Result<Vec<Value>, String> {
    fn one(v: &serde_json::Value) -> Option<Value> {
        Some(match v {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Bool(b) => Value::Boolean(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64()?),
            },
            _ => return None,
        })
    }
    match v {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| one(i).ok_or_else(|| "arrays may hold only scalars".to_owned()))
            .collect(),
        other => one(other)
            .map(|v| vec![v])
            .ok_or_else(|| "attributes must be scalars or arrays of scalars".to_owned()),
    }
}

fn scalar(v: &toml::Value) -> Option<Value> {
    Some(match v {
        toml::Value::String(s) => Value::Text(s.clone()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Boolean(*b),
        toml::Value::Datetime(d) => {
            let s = d.to_string();
            match (d.date, d.time) {
                (Some(_), None) => Value::Date(time::parse_date(&s)?),
                _ => Value::Timestamp(time::parse_timestamp(&s)?),
            }
        }
        toml::Value::Array(_) | toml::Value::Table(_) => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Ident(String),
    Str(String),
    Attr(String),
    Sym(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some((_, q)) if q == c => {
                        if chars.peek().map(|p| p.1) == Some(c) {
                            chars.next();
                            text.push(c);
                        } else {
                            break;
                        }
                    }
                    Some((_, ch)) => text.push(ch),
                    None => return Err("unterminated quote".into()),
                }
            }
            out.push(if c == '\'' {
                Tok::Str(text)
            } else {
                Tok::Ident(text)
            });
        } else if s[i..].starts_with("{{") {
            let end = s[i..].find("}}").ok_or("unterminated {{")?;
            let inner = s[i + 2..i + end].trim();
            let name = inner.strip_prefix("user.").ok_or_else(|| {
                format!("`{{{{{inner}}}}}`: only {{{{user.<attribute>}}}} is supported")
            })?;
            out.push(Tok::Attr(name.to_owned()));
            for _ in 0..end + 2 {
                chars.next();
            }
        } else if let Some(sym) = ["<=", ">=", "<>", "!=", "=", "<", ">", "(", ")", ","]
            .into_iter()
            .find(|p| s[i..].starts_with(p))
        {
            out.push(Tok::Sym(sym));
            for _ in 0..sym.len() {
                chars.next();
            }
        } else if c.is_alphanumeric() || "_.-+".contains(c) {
            let mut word = String::new();
            while let Some(&(_, ch)) = chars.peek() {
                if ch.is_alphanumeric() || "_.-+:".contains(ch) {
                    word.push(ch);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Word(word));
        } else {
            return Err(format!("unexpected `{c}`"));
        }
    }
    Ok(out)
}

fn parse_conjunction(s: &str) -> Result<Vec<PredicateRule>, String> {
    let toks = tokenize(s)?;
    let mut p = Parser { toks, pos: 0 };
    let mut out = vec![p.predicate()?];
    while p.pos < p.toks.len() {
        p.keyword("and")?;
        out.push(p.predicate()?);
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_keyword(&self, k: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn keyword(&mut self, k: &str) -> Result<(), String> {
        if self.peek_keyword(k) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected `{k}`"))
        }
    }

    fn predicate(&mut self) -> Result<PredicateRule, String> {
        let column = match self.next() {
            Some(Tok::Word(w)) if is_identifier(&w) => w,
            Some(Tok::Ident(w)) => w,
            _ => return Err("expected a column name".into()),
        };
        let (op, terms) = match self.next() {
            Some(Tok::Sym(sym)) => {
                let op = match sym {
                    "=" => Op::Eq,
                    "!=" | "<>" => Op::Ne,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    _ => return Err(format!("unexpected `{sym}` after `{column}`")),
                };
                (op, vec![self.term()?])
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("is") => {
                let negated = self.peek_keyword("not");
                if negated {
                    self.pos += 1;
                }
                self.keyword("null")?;
                (if negated { Op::NotNull } else { Op::IsNull }, Vec::new())
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("in") => (Op::In, self.list()?),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {
                self.keyword("in")?;
                (Op::NotIn, self.list()?)
            }
            _ => return Err(format!("expected an operator after `{column}`")),
        };
        Ok(PredicateRule { column, op, terms })
    }

    fn list(&mut self) -> Result<Vec<Term>, String> {
        if let Some(Tok::Attr(a)) = self.toks.get(self.pos).cloned() {
            self.pos += 1;
            return Ok(vec![Term::Attr(a)]);
        }
        if self.next() != Some(Tok::Sym("(")) {
            return Err("expected `(` or {{user.<attribute>}} after in".into());
        }
        let mut terms = vec![self.term()?];
        loop {
            match self.next() {
                Some(Tok::Sym(",")) => terms.push(self.term()?),
                Some(Tok::Sym(")")) => return Ok(terms),
                _ => return Err("expected `,` or `)`".into()),
            }
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        Ok(match self.next() {
            Some(Tok::Str(s)) => Term::Lit(Value::Text(s)),
            Some(Tok::Attr(a)) => Term::Attr(a),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Term::Lit(Value::Boolean(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => {
                Term::Lit(Value::Boolean(false))
            }
            Some(Tok::Word(w)) => {
                if let Ok(i) = w.parse::<i64>() {
                    Term::Lit(Value::Int(i))
                } else if let Ok(f) = w.parse::<f64>() {
                    Term::Lit(Value::Float(f))
                } else {
                    return Err(format!("`{w}` is not a value: quote text as '{w}'"));
                }
            }
            _ => return Err("expected a value".into()),
        })
    }
}

fn is_identifier(w: &str) -> bool {
    w.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && w.chars().all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Vec<Value>)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn parses_and_resolves() {
        let p = Policy::parse(&[
            "tenant = {{user.tenant}} and amount < 100".into(),
            "region in ('eu', 'us')".into(),
        ])
        .unwrap();
        let f = p
            .resolve(&attrs(&[("tenant", vec![Value::Text("acme".into())])]))
            .unwrap();
        let RowFilter::AnyOf(any) = f else { panic!() };
        assert_eq!(any.len(), 2);
        assert_eq!(any[0][0].values, vec![Value::Text("acme".into())]);
        assert_eq!(any[0][1].op, Op::Lt);
        assert_eq!(any[1][0].values.len(), 2);
    }

    #[test]
    fn sql_looking_attribute_is_one_value() {
        let p = Policy::parse(&["tenant = {{user.tenant}}".into()]).unwrap();
        let evil = Value::Text("' OR 1=1 --".into());
        let f = p
            .resolve(&attrs(&[("tenant", vec![evil.clone()])]))
            .unwrap();
        assert_eq!(
            f,
            RowFilter::AnyOf(vec![vec![Predicate {
                column: "tenant".into(),
                op: Op::Eq,
                values: vec![evil]
            }]])
        );
    }

    #[test]
    fn missing_attribute_is_an_error_not_a_wider_filter() {
        let p = Policy::parse(&["tenant = {{user.tenant}}".into()]).unwrap();
        assert!(
            p.resolve(&Attributes::new())
                .unwrap_err()
                .contains("tenant")
        );
    }

    #[test]
    fn empty_in_list_drops_the_conjunction() {
        let p = Policy::parse(&["region in {{user.regions}}".into()]).unwrap();
        assert_eq!(
            p.resolve(&attrs(&[("regions", vec![])])).unwrap(),
            RowFilter::AnyOf(vec![])
        );
    }

    #[test]
    fn rejects_malformed_rules() {
        for bad in [
            "tenant",
            "tenant = ",
            "= 1",
            "tenant = acme",
            "a = 1 or b = 2",
            "a = {{org.x}}",
            "a in 1",
        ] {
            assert!(Policy::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(Policy::parse(&["a is not null and \"B c\" >= -1.5".into()]).is_ok());
    }
}

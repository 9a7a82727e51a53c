//! What a driver's credential holds beyond reading, in its own database's
//! terms: each driver lists it with these, and the engine's registration
//! check words the refusal the same way for every database.

/// MySQL: the privileges in `SHOW GRANTS` lines beyond SELECT, SHOW VIEW and
/// USAGE, or any of those outside `database`. Password hashes in the lines
/// are never copied into the result.
pub fn mysql_offending(grants: &[String], database: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in grants {
        let Some(rest) = line.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privileges, rest)) = rest.split_once(" ON ") else {
            // `GRANT role TO user`: a role's privileges are not inspected here.
            let role = rest.split(" TO ").next().unwrap_or_default();
            out.push(format!("role {role}"));
            continue;
        };
        let object = rest.split(" TO ").next().unwrap_or_default().trim();
        let in_database = object
            .split('.')
            .next()
            .is_some_and(|db| db.trim_matches('`') == database);
        for privilege in split_privileges(privileges) {
            let reads = matches!(privilege.as_str(), "SELECT" | "SHOW VIEW")
                || privilege.starts_with("SELECT (");
            let harmless = privilege == "USAGE" || (reads && in_database);
            if !harmless {
                out.push(format!("{privilege} ON {object}"));
            }
        }
        if rest.contains("WITH GRANT OPTION") {
            out.push(format!("GRANT OPTION ON {object}"));
        }
    }
    out
}

/// `SELECT, INSERT (a, b), UPDATE` → each privilege, column lists kept.
fn split_privileges(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut current) = (0_usize, String::new());
    for ch in list.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    out.push(current.trim().to_owned());
    out.retain(|p| !p.is_empty());
    out
}

/// MongoDB actions a read-only user may hold.
const MONGO_READ_ACTIONS: &[&str] = &[
    "find",
    "listCollections",
    "listIndexes",
    "listSearchIndexes",
    "collStats",
    "dbStats",
    "dbHash",
    "killCursors",
    "changeStream",
    "planCacheRead",
];

/// MongoDB: roles other than `read` on `database`, and privileges with actions
/// beyond reading, from `connectionStatus` with `showPrivileges`.
pub fn mongo_offending(status: &bson::Document, database: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(auth) = status.get_document("authInfo") else {
        return vec!["unknown privileges (no authInfo in connectionStatus)".into()];
    };
    let users = auth.get_array("authenticatedUsers").map_or(0, Vec::len);
    if users == 0 {
        out.push("no authentication (every client may write)".into());
    }
    for role in auth
        .get_array("authenticatedUserRoles")
        .into_iter()
        .flatten()
    {
        let Some(role) = role.as_document() else {
            continue;
        };
        let (name, db) = (
            role.get_str("role").unwrap_or("?"),
            role.get_str("db").unwrap_or("?"),
        );
        if !(name == "read" && db == database) {
            out.push(format!("role {name}@{db}"));
        }
    }
    for privilege in auth
        .get_array("authenticatedUserPrivileges")
        .into_iter()
        .flatten()
    {
        let Some(privilege) = privilege.as_document() else {
            continue;
        };
        let resource = privilege
            .get_document("resource")
            .map(|r| {
                format!(
                    "{}.{}",
                    r.get_str("db").unwrap_or("*"),
                    r.get_str("collection").unwrap_or("*")
                )
            })
            .unwrap_or_else(|_| "cluster".into());
        for action in privilege.get_array("actions").into_iter().flatten() {
            if let Some(a) = action.as_str()
                && !MONGO_READ_ACTIONS.contains(&a)
            {
                out.push(format!("{a} on {resource}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_read_only_grants_pass_and_the_rest_is_named() {
        let ok = [
            "GRANT USAGE ON *.* TO `r`@`%` IDENTIFIED BY PASSWORD '*ABC'".to_owned(),
            "GRANT SELECT, SHOW VIEW ON `shop`.* TO `r`@`%`".to_owned(),
            "GRANT SELECT (`id`, `tenant`) ON `shop`.`orders` TO `r`@`%`".to_owned(),
        ];
        assert!(mysql_offending(&ok, "shop").is_empty());
        let bad = [
            "GRANT USAGE ON *.* TO `r`@`%` IDENTIFIED BY PASSWORD '*ABC'".to_owned(),
            "GRANT SELECT, INSERT, UPDATE (`a`) ON `shop`.`orders` TO `r`@`%` WITH GRANT OPTION"
                .to_owned(),
            "GRANT SELECT ON `other`.* TO `r`@`%`".to_owned(),
            "GRANT `admin` TO `r`@`%`".to_owned(),
        ];
        let found = mysql_offending(&bad, "shop");
        assert_eq!(
            found,
            [
                "INSERT ON `shop`.`orders`",
                "UPDATE (`a`) ON `shop`.`orders`",
                "GRANT OPTION ON `shop`.`orders`",
                "SELECT ON `other`.*",
                "role `admin`"
            ]
        );
        assert!(!found.concat().contains("ABC"), "no password hash");
    }

    #[test]
    fn mongo_only_read_on_the_database_passes() {
        let status = |roles: bson::Bson| {
            bson::doc! { "authInfo": { "authenticatedUsers": [{ "user": "r", "db": "shop" }], "authenticatedUserRoles": roles } }
        };
        let ok = status(bson::bson!([{ "role": "read", "db": "shop" }]));
        assert!(mongo_offending(&ok, "shop").is_empty());
        let bad = status(
            bson::bson!([{ "role": "readWrite", "db": "shop" }, { "role": "read", "db": "admin" }]),
        );
        assert_eq!(
            mongo_offending(&bad, "shop"),
            ["role readWrite@shop", "role read@admin"]
        );
        let anonymous =
            bson::doc! { "authInfo": { "authenticatedUsers": [], "authenticatedUserRoles": [] } };
        assert_eq!(mongo_offending(&anonymous, "shop").len(), 1);
    }
}

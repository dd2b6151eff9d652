//! The GraphQL queries the official `backend.ai` client sends to
//! `POST /admin/gql`: `keypair`, `compute_session_list`, `compute_session`,
//! `vfolder_list`.
//!
//! The client zips the field names it asked for with the values it gets
//! back, positionally, so every object must contain exactly the requested
//! fields in the requested order. The query is parsed with a real GraphQL
//! parser; each entity is built as a JSON object with every field we know,
//! then projected through the selection set (unknown fields become `null`,
//! aliases and nested selections are honoured).

use std::collections::HashMap;

use graphql_parser::query::{
    Definition, Document, Field, OperationDefinition, Selection, SelectionSet, Value as GqlValue,
    parse_query,
};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::{Folder, SessionRow, Status};

type Vars = Map<String, Value>;

/// A GraphQL request body.
#[derive(Debug, serde::Deserialize)]
pub struct GqlRequest {
    /// The query text.
    pub query: String,
    /// Variables.
    #[serde(default)]
    pub variables: Option<Vars>,
}

fn gql_error(msg: impl Into<String>) -> Value {
    json!({"data": null, "errors": [{"message": msg.into()}]})
}

/// Executes a query for `caller`; errors are reported GraphQL-style.
pub async fn execute(
    state: &AppState,
    caller: &Caller,
    req: GqlRequest,
) -> Result<Value, ApiError> {
    let doc: Document<'_, String> = match parse_query(&req.query) {
        Ok(d) => d,
        Err(e) => return Ok(gql_error(format!("syntax error: {e}"))),
    };
    let vars = req.variables.unwrap_or_default();
    let mut fragments = HashMap::new();
    let mut operation = None;
    for def in &doc.definitions {
        match def {
            Definition::Fragment(f) => {
                fragments.insert(f.name.clone(), &f.selection_set);
            }
            Definition::Operation(op) => operation = Some(op),
        }
    }
    let set = match operation {
        Some(OperationDefinition::Query(q)) => &q.selection_set,
        Some(OperationDefinition::SelectionSet(s)) => s,
        Some(_) => return Ok(gql_error("only queries are supported")),
        None => return Ok(gql_error("no operation in the document")),
    };
    let mut data = Map::new();
    for field in fields(set, &fragments) {
        let key = field.alias.clone().unwrap_or_else(|| field.name.clone());
        let args = arguments(field, &vars);
        let value = match field.name.as_str() {
            "keypair" => keypair(state, caller).await?,
            "compute_session_list" => session_list(state, caller, &args).await?,
            "compute_session" => session_one(state, caller, &args).await?,
            "vfolder_list" => vfolder_list(state, caller).await?,
            "__typename" => json!("Query"),
            other => return Ok(gql_error(format!("unknown field {other:?} on Query"))),
        };
        data.insert(key, project(&value, &field.selection_set, &fragments));
    }
    Ok(json!({"data": data}))
}

fn fields<'a, 'q>(
    set: &'a SelectionSet<'q, String>,
    fragments: &HashMap<String, &'a SelectionSet<'q, String>>,
) -> Vec<&'a Field<'q, String>> {
    let mut out = Vec::new();
    for item in &set.items {
        match item {
            Selection::Field(f) => out.push(f),
            Selection::InlineFragment(i) => out.extend(fields(&i.selection_set, fragments)),
            Selection::FragmentSpread(s) => {
                if let Some(fs) = fragments.get(&s.fragment_name) {
                    out.extend(fields(fs, fragments));
                }
            }
        }
    }
    out
}

fn to_json(v: &GqlValue<'_, String>, vars: &Vars) -> Value {
    match v {
        GqlValue::Variable(name) => vars.get(name).cloned().unwrap_or(Value::Null),
        GqlValue::Int(n) => n.as_i64().map_or(Value::Null, Value::from),
        GqlValue::Float(f) => json!(f),
        GqlValue::String(s) => json!(s),
        GqlValue::Boolean(b) => json!(b),
        GqlValue::Null => Value::Null,
        GqlValue::Enum(e) => json!(e),
        GqlValue::List(l) => Value::Array(l.iter().map(|x| to_json(x, vars)).collect()),
        GqlValue::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), to_json(x, vars)))
                .collect(),
        ),
    }
}

fn arguments(field: &Field<'_, String>, vars: &Vars) -> Map<String, Value> {
    field
        .arguments
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v, vars)))
        .collect()
}

/// Keeps exactly the selected fields, in selection order.
fn project<'a, 'q>(
    value: &Value,
    set: &'a SelectionSet<'q, String>,
    fragments: &HashMap<String, &'a SelectionSet<'q, String>>,
) -> Value {
    if set.items.is_empty() {
        return value.clone();
    }
    match value {
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| project(v, set, fragments)).collect())
        }
        Value::Object(obj) => {
            let mut out = Map::new();
            for f in fields(set, fragments) {
                let key = f.alias.clone().unwrap_or_else(|| f.name.clone());
                let v = obj.get(&f.name).cloned().unwrap_or(Value::Null);
                out.insert(key, project(&v, &f.selection_set, fragments));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, false))
        .unwrap_or_default()
}

async fn keypair(state: &AppState, caller: &Caller) -> Result<Value, ApiError> {
    let kp = state.store().keypair_of(&caller.user.id).await?;
    Ok(match kp {
        Some(k) => json!({
            "user_id": caller.user.email,
            "user": caller.user.id,
            "access_key": k.access_key,
            // Never echoed: the client only reads `is_admin` from this
            // query (and a caller who signs requests already has it).
            "secret_key": null,
            "is_active": caller.user.is_active,
            "is_admin": caller.user.is_admin(),
            "resource_policy": "default",
            "created_at": iso(caller.user.created_at),
            "last_used": null,
            "concurrency_used": 0,
            "rate_limit": 0,
            "num_queries": 0,
            "ssh_public_key": null,
        }),
        None => Value::Null,
    })
}

/// The full GraphQL view of a session (fields from both client series).
async fn session_object(state: &AppState, s: &SessionRow) -> Result<Value, ApiError> {
    let owner = state.store().user_by_id(&s.user_id).await?;
    let email = owner.as_ref().map(|u| u.email.clone()).unwrap_or_default();
    let access_key = state
        .store()
        .keypair_of(&s.user_id)
        .await?
        .map(|k| k.access_key)
        .unwrap_or_default();
    // Backend.AI's GraphQL schema types these as JSONString: the client
    // json.loads() them, so they travel as strings holding JSON.
    let slots = json!({
        "cpu": format!("{}", s.cpu_milli as f64 / 1000.0),
        "mem": s.mem_bytes.to_string(),
    })
    .to_string();
    let empty = "{}";
    let status_changed = iso(s.status_changed);
    let terminated = s.terminated_at.map(iso);
    let mounts: Vec<&str> = s.mounts.iter().map(|m| m.name.as_str()).collect();
    let service_ports =
        json!([{"name": "sshd", "protocol": "tcp", "container_ports": [2200], "host_ports": [null]}])
            .to_string();
    let container = json!({
        "id": s.id,
        "kernel_id": s.id,
        "cluster_role": "main",
        "cluster_idx": 0,
        "local_rank": 0,
        "cluster_hostname": "main1",
        "session_id": s.id,
        "image": s.image,
        "registry": "local",
        "status": s.status.as_str(),
        "status_info": s.status_info,
        "status_data": empty,
        "status_changed": status_changed,
        "agent": s.agent_id,
        "container_id": s.container_id,
        "resource_opts": empty,
        "occupied_slots": slots,
        "preopen_ports": [],
        "live_stat": null,
        "last_stat": null,
    });
    Ok(json!({
        "id": s.id,
        "session_id": s.id,
        "kernel_id": s.id,
        "main_kernel_id": s.id,
        "tag": null,
        "name": s.name,
        "type": "interactive",
        "session_type": "interactive",
        "image": s.image,
        "registry": "local",
        "architecture": "x86_64",
        "cluster_template": null,
        "cluster_mode": "single-node",
        "cluster_size": 1,
        "domain_name": "default",
        "group_name": "default",
        "group_id": null,
        "user_email": email,
        "user_id": s.user_id,
        "access_key": access_key,
        "created_user_email": email,
        "created_user_id": s.user_id,
        "status": s.status.as_str(),
        "status_info": s.status_info,
        "status_data": empty,
        "status_changed": status_changed,
        "created_at": iso(s.created_at),
        "terminated_at": terminated,
        "starts_at": null,
        "startup_command": null,
        "result": if s.status == Status::Error { "FAILURE" } else { "UNDEFINED" },
        "resoucre_opts": empty,
        "resource_opts": empty,
        "scaling_group": "default",
        "service_ports": service_ports,
        "mounts": mounts,
        "occupied_slots": slots,
        "occupying_slots": slots,
        "requested_slots": slots,
        "idle_checks": empty,
        "priority": 0,
        "agent": s.agent_id,
        "agents": [s.agent_id],
        "containers": [container],
        "dependencies": [],
        "abusing_reports": [],
    }))
}

fn statuses(arg: Option<&Value>) -> Option<Vec<String>> {
    let s = arg?.as_str()?;
    Some(
        s.split(',')
            .map(|x| x.trim().to_ascii_uppercase())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

async fn session_list(
    state: &AppState,
    caller: &Caller,
    args: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let scope = if caller.user.is_admin() {
        None
    } else {
        Some(caller.user.id.as_str())
    };
    let mut rows = state
        .store()
        .sessions(scope, crate::store::Lookup::EvenEnded)
        .await?;
    if let Some(wanted) = statuses(args.get("status")) {
        rows.retain(|s| wanted.iter().any(|w| w == s.status.as_str()));
    }
    if let Some(ak) = args.get("access_key").and_then(Value::as_str) {
        let owner = state.store().keypair(ak).await?.map(|k| k.user_id);
        rows.retain(|s| owner.as_deref() == Some(s.user_id.as_str()));
    }
    let total = rows.len();
    let offset = args.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize;
    let mut items = Vec::new();
    for s in rows.iter().skip(offset).take(limit) {
        items.push(session_object(state, s).await?);
    }
    Ok(json!({"items": items, "total_count": total}))
}

async fn session_one(
    state: &AppState,
    caller: &Caller,
    args: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let Some(id) = args.get("id").and_then(Value::as_str) else {
        return Ok(Value::Null);
    };
    let Ok(uuid) = uuid::Uuid::parse_str(id) else {
        return Ok(Value::Null);
    };
    match state.store().session(&uuid.to_string()).await? {
        Some(s) if caller.may_access(&s.user_id) => session_object(state, &s).await,
        _ => Ok(Value::Null),
    }
}

fn folder_object(f: &Folder, email: &str) -> Value {
    json!({
        "id": f.hex_id(),
        "host": f.host,
        "quota_scope_id": format!("user:{}", f.user_id),
        "name": f.name,
        "user": f.user_id,
        "user_id": f.user_id,
        "user_email": email,
        "group": null,
        "group_id": null,
        "group_name": null,
        "creator": email,
        "status": "ready",
        "unmanaged_path": null,
        "usage_mode": "general",
        "permission": "rw",
        "ownership_type": "user",
        "max_files": 0,
        "max_size": 0,
        "created_at": iso(f.created_at),
        "last_used": null,
        "num_files": 0,
        "cur_size": 0,
        "cloneable": false,
    })
}

async fn vfolder_list(state: &AppState, caller: &Caller) -> Result<Value, ApiError> {
    let folders = state.store().folders(Some(&caller.user.id)).await?;
    let items: Vec<Value> = folders
        .iter()
        .map(|f| folder_object(f, &caller.user.email))
        .collect();
    Ok(json!({"items": items, "total_count": items.len()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(q: &str, value: Value) -> Value {
        let doc: Document<'_, String> = parse_query(q).unwrap();
        let set = match &doc.definitions[0] {
            Definition::Operation(OperationDefinition::Query(q)) => &q.selection_set,
            Definition::Operation(OperationDefinition::SelectionSet(s)) => s,
            _ => panic!("not a query"),
        };
        let fragments = HashMap::new();
        let f = fields(set, &fragments)[0];
        project(&value, &f.selection_set, &fragments)
    }

    #[test]
    fn projects_exact_fields_in_order() {
        let q = "query($limit:Int!) { compute_session_list(limit:$limit) { items { status name nope } total_count } }";
        let v =
            json!({"items": [{"name": "a", "status": "RUNNING", "extra": 1}], "total_count": 1});
        let out = run(q, v);
        let item = &out["items"][0];
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["status", "name", "nope"]);
        assert!(item["nope"].is_null());
        assert_eq!(out["total_count"], 1);
    }

    #[test]
    fn nested_and_aliases() {
        let q = "{ compute_session { n: name containers { id agent } dependencies { name id } } }";
        let v = json!({"name": "a", "containers": [{"agent": "x", "id": "1", "more": 2}], "dependencies": []});
        let out = run(q, v);
        assert_eq!(
            out,
            json!({"n": "a", "containers": [{"id": "1", "agent": "x"}], "dependencies": []})
        );
    }
}

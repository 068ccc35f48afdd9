//! The collector's IAM role: trust policy, one inline policy, an optional permissions boundary
//! and our ownership tags. `ensure` creates or reconciles it, `delete` untags or removes it.
//!
//! Creating a role is two writes: CreateRole (with our tags) and PutRolePolicy. A re-run tells
//! "crashed between them" (finish the create, whatever the drift policy) from "someone deleted our
//! inline policy" (drift: corrected or only reported) by the pipeline's status: it records the
//! role's ARN (`status.aws.roleArn`, `hotPathRoleArn`) only after both writes succeeded. A role
//! of ours that status does not record and that lacks our inline policy is a create to finish.
//! Roles created by earlier versions carry `mlobs.io/pending` until their inline policy is in
//! place (a third write, UntagRole, removed it); a role still carrying it is finished the same way.
//!
//! Not compared, on purpose: other inline or attached policies (not ours; IAM grants the union, so
//! they are the role owner's business), the role's path (IAM cannot change it) and extra tags.

use std::collections::BTreeMap;

use aws_sdk_iam::operation::create_role::CreateRoleError;
use aws_sdk_iam::operation::delete_role::DeleteRoleError;
use aws_sdk_iam::operation::delete_role_policy::DeleteRolePolicyError;
use aws_sdk_iam::operation::get_role::GetRoleError;
use aws_sdk_iam::operation::get_role_policy::GetRolePolicyError;
use aws_sdk_iam::types::{Role, Tag};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::Value;

use super::error::classify;
use super::{AwsClients, AwsError, Drift, Owner};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::RolePlan;

/// Present on a role an earlier version created until its inline policy was written (see the
/// module docs); removed when found.
pub const TAG_PENDING: &str = "mlobs.io/pending";
/// Prefix of every tag key mlobs owns; `Retain` removes exactly these.
const TAG_PREFIX: &str = "mlobs.io/";
const ABSENT: &str = "<absent>";

/// The `RolePlan::Create` fields, borrowed.
struct Want<'a> {
    name: &'a str,
    path: &'a str,
    trust: &'a Value,
    policy_name: &'a str,
    policy: &'a Value,
    boundary: Option<&'a str>,
    tags: &'a BTreeMap<String, String>,
}

impl Want<'_> {
    fn resource(&self) -> String {
        format!("iamRole:{}", self.name)
    }
}

/// A role as GetAccountAuthorizationDetails lists it: everything [`ensure`] compares, the policy
/// documents as digests. A snapshot holds every role of the shard for a whole resync period; with
/// the documents kept as text a role took 3,024 bytes, as digests 519 (`tests/cache_memory.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRole {
    pub arn: String,
    /// The trust policy.
    pub trust: Option<DocDigest>,
    pub boundary: Option<String>,
    /// Sorted by key.
    tags: Box<[(Box<str>, Box<str>)]>,
    /// Inline policy name → document, sorted by name.
    inline: Box<[(Box<str>, DocDigest)]>,
}

impl ObservedRole {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        let i = self.tags.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok()?;
        self.tags.get(i).map(|(_, v)| v.as_ref())
    }

    /// The tags, sorted by key.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// The digest of the inline policy `name`; `None`: the role has no such policy.
    pub fn inline(&self, name: &str) -> Option<DocDigest> {
        let i = self.inline.binary_search_by(|(k, _)| k.as_ref().cmp(name)).ok()?;
        self.inline.get(i).map(|(_, d)| *d)
    }
}

/// A policy document as a [`RoleSnapshot`] keeps it: the SHA-256 of its [`normalize`]d JSON, so
/// two documents [`differs`] calls equal have the same digest. A stored document that is not JSON
/// is digested as text, apart from any JSON one, so it never equals a desired document.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DocDigest([u8; 32]);

impl std::fmt::Debug for DocDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.0.iter().take(6).map(|b| format!("{b:02x}")).collect();
        write!(f, "DocDigest({hex}…)")
    }
}

impl DocDigest {
    /// The digest of a document as IAM stores it (URL-encoded).
    pub fn of_stored(raw: &str) -> DocDigest {
        match decode_policy(raw) {
            Ok(v) => DocDigest::of(&v),
            Err(text) => DocDigest::hash(&[b"text\0", text.as_bytes()]),
        }
    }

    /// The digest of a document.
    pub fn of(v: &Value) -> DocDigest {
        DocDigest::hash(&[b"json\0", normalize(v).to_string().as_bytes()])
    }

    fn hash(parts: &[&[u8]]) -> DocDigest {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        DocDigest(h.finalize().into())
    }
}

/// Roles per GetAccountAuthorizationDetails page. IAM allows 1,000, but a page of 1,000 roles is
/// about 1.8 MB of XML, held in memory with everything parsed from it (about 5 MB at the peak of a
/// heaptrack profile at 1,000 pipelines, its largest single item): smaller pages cost one read per
/// 250 roles.
pub const ROLES_PAGE: i32 = 250;

/// The roles that carry mlobs's `mlobs.io/pipeline` tag, by name: one paged
/// GetAccountAuthorizationDetails (Filter Role, [`ROLES_PAGE`] a page) for all pipelines instead of GetRole
/// and GetRolePolicy for each. Roles without the tag are left out (they are not ours; a role being
/// adopted is looked up by GetRole), and so are those whose pipeline tag the caller's `keep`
/// refuses (another shard's: a sharded replica keeps its own shard's roles, not the account's).
pub type RoleSnapshot = BTreeMap<String, ObservedRole>;

/// One listed role as a [`RoleSnapshot`] keeps it: (its name, the role), or `None` when it lacks
/// a name, an ARN or the `mlobs.io/pipeline` tag, or `keep` refuses that tag's value.
pub fn observed_role(
    r: &aws_sdk_iam::types::RoleDetail,
    keep: &dyn Fn(&str) -> bool,
) -> Option<(String, ObservedRole)> {
    let pipeline = r.tags().iter().find(|t| t.key() == super::TAG_PIPELINE)?;
    if !keep(pipeline.value()) {
        return None;
    }
    let (name, arn) = (r.role_name()?, r.arn()?);
    let mut tags: Vec<(Box<str>, Box<str>)> = r.tags().iter().map(|t| (t.key().into(), t.value().into())).collect();
    tags.sort();
    tags.dedup_by(|a, b| a.0 == b.0);
    let mut inline: Vec<(Box<str>, DocDigest)> = r
        .role_policy_list()
        .iter()
        .filter_map(|p| Some((p.policy_name()?.into(), DocDigest::of_stored(p.policy_document()?))))
        .collect();
    inline.sort_by(|a, b| a.0.cmp(&b.0));
    inline.dedup_by(|a, b| a.0 == b.0);
    let role = ObservedRole {
        arn: arn.to_string(),
        trust: r.assume_role_policy_document().map(DocDigest::of_stored),
        boundary: r
            .permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn())
            .map(str::to_string),
        tags: tags.into_boxed_slice(),
        inline: inline.into_boxed_slice(),
    };
    Some((name.to_string(), role))
}

/// Reads [`RoleSnapshot`], keeping the roles whose `mlobs.io/pipeline` tag (`<ns>/<name>`)
/// `keep` accepts. Needs `iam:GetAccountAuthorizationDetails` (on `*`: the action has no
/// resource type); without it the caller falls back to per-role reads.
pub async fn observe_roles(c: &AwsClients, keep: &(dyn Fn(&str) -> bool + Sync)) -> Result<RoleSnapshot, AwsError> {
    let mut roles = RoleSnapshot::new();
    let mut marker = None;
    loop {
        let out = c
            .iam
            .get_account_authorization_details()
            .filter(aws_sdk_iam::types::EntityType::Role)
            .max_items(ROLES_PAGE)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| classify("GetAccountAuthorizationDetails", "iam", e))?;
        roles.extend(out.role_detail_list().iter().filter_map(|r| observed_role(r, keep)));
        match (out.is_truncated(), out.marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => return Ok(roles),
        }
    }
}

/// What `reconcile` compares, from GetRole (inline policy still to be read) or from a snapshot.
struct RoleView {
    arn: String,
    tags: Vec<(String, String)>,
    boundary: Option<String>,
    trust: Option<Result<Value, String>>,
    /// `None`: not known yet, read it with GetRolePolicy; `Some(None)`: the role has no such policy.
    inline: Option<Option<Result<Value, String>>>,
}

impl RoleView {
    fn of_role(role: &Role) -> RoleView {
        RoleView {
            arn: role.arn().to_string(),
            tags: role
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            boundary: role
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_string),
            trust: role.assume_role_policy_document().map(decode_policy),
            inline: None,
        }
    }

    /// The view of a listed role whose documents are the desired ones (or whose inline policy
    /// is missing); `None` when a document differs: the role is then read (GetRole,
    /// GetRolePolicy) so that what it holds can be reported.
    fn of_observed(r: &ObservedRole, w: &Want<'_>) -> Option<RoleView> {
        let same = |seen: Option<DocDigest>, want: &Value| seen == Some(DocDigest::of(want));
        if !same(r.trust, w.trust) {
            return None;
        }
        let inline = match r.inline(w.policy_name) {
            None => None,
            Some(seen) if same(Some(seen), w.policy) => Some(Ok(w.policy.clone())),
            Some(_) => return None,
        };
        Some(RoleView {
            arn: r.arn.clone(),
            tags: r.tags().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            boundary: r.boundary.clone(),
            trust: Some(Ok(w.trust.clone())),
            inline: Some(inline),
        })
    }
}

/// Ensures the role of the plan and returns its ARN with the drift found.
///
/// `Existing` roles are only verified (never changed). A created role that exists without our
/// `mlobs.io/pipeline` tag is a [`AwsError::NameConflict`] unless `adopt`, which tags it first.
/// An unchanged role costs two reads (GetRole, GetRolePolicy) and no write; a new one two writes.
/// `recorded`: the role ARNs the pipeline's status records (see the module docs); a role of ours
/// not among them and without our inline policy is a create to finish.
pub async fn ensure(
    c: &AwsClients,
    plan: &RolePlan,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
    recorded: &[String],
) -> Result<(String, Vec<Drift>), AwsError> {
    ensure_from(c, plan, owner, adopt, drift, None, recorded).await
}

/// [`ensure`], comparing against `snapshot` (a resync's [`RoleSnapshot`]) when the role is in it:
/// then an unchanged role costs no call. A role missing from it is read as by [`ensure`] (it may
/// be newer than the snapshot, or not carry our tag), and so is one whose trust or inline policy
/// differs from the plan's: the snapshot keeps digests, the drift record shows what the role holds.
pub async fn ensure_from(
    c: &AwsClients,
    plan: &RolePlan,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
    snapshot: Option<&RoleSnapshot>,
    recorded: &[String],
) -> Result<(String, Vec<Drift>), AwsError> {
    let w = match plan {
        RolePlan::Existing { arn } => return verify_existing(c, arn).await.map(|arn| (arn, Vec::new())),
        RolePlan::Create {
            name,
            path,
            trust_policy,
            inline_policy_name,
            inline_policy,
            permissions_boundary,
            tags,
            ..
        } => Want {
            name,
            path,
            trust: trust_policy,
            policy_name: inline_policy_name,
            policy: inline_policy,
            boundary: permissions_boundary.as_deref(),
            tags,
        },
    };
    if let Some(view) = (snapshot.and_then(|s| s.get(w.name))).and_then(|seen| RoleView::of_observed(seen, &w)) {
        return reconcile(c, &w, view, owner, adopt, drift, recorded).await;
    }
    match get_role(c, w.name).await? {
        None => create(c, &w).await.map(|arn| (arn, Vec::new())),
        Some(role) => reconcile(c, &w, RoleView::of_role(&role), owner, adopt, drift, recorded).await,
    }
}

/// `existingRoleArn`: the role must exist under exactly this ARN; mlobs never changes it.
async fn verify_existing(c: &AwsClients, arn: &str) -> Result<String, AwsError> {
    // A role ARN is `arn:<partition>:iam::<account>:role/<path/>name`: the name follows the last `/`.
    let name = arn.rsplit('/').next().unwrap_or(arn);
    match get_role(c, name).await? {
        Some(role) if role.arn() == arn => Ok(arn.to_string()),
        // Same name under another path or account is not the role the user named.
        _ => Err(AwsError::Missing {
            resource: format!("iamRole:{arn}"),
        }),
    }
}

async fn get_role(c: &AwsClients, name: &str) -> Result<Option<Role>, AwsError> {
    let resource = format!("iamRole:{name}");
    match c.iam.get_role().role_name(name).send().await {
        Ok(out) => out
            .role
            .map(Some)
            .ok_or_else(|| invalid_response("GetRole", &resource, "no Role in the response")),
        Err(e) if is_kind(&e, GetRoleError::is_no_such_entity_exception) => Ok(None),
        Err(e) => Err(classify("GetRole", &resource, e)),
    }
}

/// CreateRole → PutRolePolicy: two writes. The ARN is returned (and recorded in status) only
/// after both.
async fn create(c: &AwsClients, w: &Want<'_>) -> Result<String, AwsError> {
    let resource = w.resource();
    let out = c
        .iam
        .create_role()
        .role_name(w.name)
        .path(w.path)
        .assume_role_policy_document(w.trust.to_string())
        .set_permissions_boundary(w.boundary.map(str::to_string))
        .set_tags(Some(iam_tags("CreateRole", &resource, w.tags)?))
        .send()
        .await
        .map_err(|e| {
            // GetRole said absent a moment ago: another writer raced us; the next pass reconciles.
            if is_kind(&e, CreateRoleError::is_entity_already_exists_exception) {
                AwsError::Retryable {
                    operation: "CreateRole".into(),
                    resource: resource.clone(),
                    code: "EntityAlreadyExists".into(),
                    message: e.message().unwrap_or_default().to_string(),
                }
            } else {
                classify("CreateRole", &resource, e)
            }
        })?;
    let arn = out
        .role
        .map(|r| r.arn().to_string())
        .ok_or_else(|| invalid_response("CreateRole", &resource, "no Role in the response"))?;
    put_policy(c, w).await?;
    Ok(arn)
}

async fn reconcile(
    c: &AwsClients,
    w: &Want<'_>,
    role: RoleView,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
    recorded: &[String],
) -> Result<(String, Vec<Drift>), AwsError> {
    let resource = w.resource();
    let mut actual_tags: BTreeMap<&str, &str> = role.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ours_before = owner.owns(actual_tags.iter().map(|(k, v)| (*k, *v)));
    if !ours_before {
        if !adopt {
            return Err(AwsError::NameConflict { resource });
        }
        // Tag first: if we crash mid-reconcile, the next pass already sees the role as ours.
        tag(c, w.name, w.tags).await?;
        actual_tags.extend(w.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    let inline = match role.inline {
        Some(seen) => seen,
        None => get_policy(c, w).await?,
    };
    // Finishing our own create is not drift: do it in every mode and report nothing.
    let legacy_pending = actual_tags.contains_key(TAG_PENDING);
    let unfinished = ours_before && inline.is_none() && !recorded.contains(&role.arn);
    let pending = legacy_pending || unfinished;
    let correct = pending || drift == DriftPolicy::Correct;
    let mut found = Vec::new();
    let mut note = |field: &str, desired: String, actual: String, corrected: bool| {
        if !pending {
            found.push(Drift {
                resource: resource.clone(),
                field: field.into(),
                desired,
                actual,
                corrected,
            });
        }
    };

    // The boundary first: an operator policy conditioned on iam:PermissionsBoundary refuses
    // PutRolePolicy on a role whose boundary is missing.
    let boundary = role.boundary.as_deref();
    match (w.boundary, boundary) {
        (Some(want), have) if have != Some(want) => {
            if correct {
                c.iam
                    .put_role_permissions_boundary()
                    .role_name(w.name)
                    .permissions_boundary(want)
                    .send()
                    .await
                    .map_err(|e| classify("PutRolePermissionsBoundary", &resource, e))?;
            }
            note(
                "permissionsBoundary",
                want.into(),
                have.unwrap_or(ABSENT).into(),
                correct,
            );
        }
        // Removing a boundary someone else set would widen the role: report it, never undo it.
        (None, Some(have)) => note("permissionsBoundary", ABSENT.into(), have.into(), false),
        _ => {}
    }

    if let Some(actual) = differs(w.trust, role.trust.as_ref()) {
        if correct {
            c.iam
                .update_assume_role_policy()
                .role_name(w.name)
                .policy_document(w.trust.to_string())
                .send()
                .await
                .map_err(|e| classify("UpdateAssumeRolePolicy", &resource, e))?;
        }
        note("assumeRolePolicyDocument", shown(w.trust), actual, correct);
    }

    if let Some(actual) = differs(w.policy, inline.as_ref()) {
        if correct {
            put_policy(c, w).await?;
        }
        note(
            &format!("inlinePolicy/{}", w.policy_name),
            shown(w.policy),
            actual,
            correct,
        );
    }

    let missing: BTreeMap<String, String> = w
        .tags
        .iter()
        .filter(|(k, v)| actual_tags.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !missing.is_empty() && correct {
        tag(c, w.name, &missing).await?;
    }
    for (k, v) in &missing {
        let have = actual_tags.get(k.as_str()).copied().unwrap_or(ABSENT);
        note(&format!("tags/{k}"), v.clone(), have.into(), correct);
    }

    if legacy_pending {
        untag(c, w.name, vec![TAG_PENDING.to_string()]).await?;
    }
    Ok((role.arn, found))
}

/// Our inline policy as stored, `None` when the role has none by that name.
async fn get_policy(c: &AwsClients, w: &Want<'_>) -> Result<Option<Result<Value, String>>, AwsError> {
    match c
        .iam
        .get_role_policy()
        .role_name(w.name)
        .policy_name(w.policy_name)
        .send()
        .await
    {
        Ok(out) => Ok(Some(decode_policy(out.policy_document()))),
        Err(e) if is_kind(&e, GetRolePolicyError::is_no_such_entity_exception) => Ok(None),
        Err(e) => Err(classify("GetRolePolicy", &w.resource(), e)),
    }
}

async fn put_policy(c: &AwsClients, w: &Want<'_>) -> Result<(), AwsError> {
    c.iam
        .put_role_policy()
        .role_name(w.name)
        .policy_name(w.policy_name)
        .policy_document(w.policy.to_string())
        .send()
        .await
        .map(drop)
        .map_err(|e| classify("PutRolePolicy", &w.resource(), e))
}

async fn tag(c: &AwsClients, name: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
    let resource = format!("iamRole:{name}");
    c.iam
        .tag_role()
        .role_name(name)
        .set_tags(Some(iam_tags("TagRole", &resource, tags)?))
        .send()
        .await
        .map(drop)
        .map_err(|e| classify("TagRole", &resource, e))
}

async fn untag(c: &AwsClients, name: &str, keys: Vec<String>) -> Result<(), AwsError> {
    c.iam
        .untag_role()
        .role_name(name)
        .set_tag_keys(Some(keys))
        .send()
        .await
        .map(drop)
        .map_err(|e| classify("UntagRole", &format!("iamRole:{name}"), e))
}

fn iam_tags(operation: &str, resource: &str, tags: &BTreeMap<String, String>) -> Result<Vec<Tag>, AwsError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder().key(k).value(v).build().map_err(|e| AwsError::Terminal {
                operation: operation.into(),
                resource: resource.into(),
                code: "InvalidTag".into(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// Whether a service error is of the given modeled kind (e.g. NoSuchEntity, which means "absent").
fn is_kind<E>(e: &SdkError<E, HttpResponse>, kind: fn(&E) -> bool) -> bool {
    e.as_service_error().is_some_and(kind)
}

fn invalid_response(operation: &str, resource: &str, message: &str) -> AwsError {
    AwsError::Terminal {
        operation: operation.into(),
        resource: resource.into(),
        code: "InvalidResponse".into(),
        message: message.into(),
    }
}

/// Applies the deletion policy to a role mlobs created. `Existing` roles and roles without our
/// `mlobs.io/pipeline` tag are never touched; an absent role is success.
///
/// `Delete` removes only our inline policy, then the role. Policies someone else put on the role
/// stay, and DeleteRole then fails with `DeleteConflict`: a terminal error naming the way out.
pub async fn delete(c: &AwsClients, plan: &RolePlan, owner: &Owner, policy: DeletionPolicy) -> Result<(), AwsError> {
    let RolePlan::Create {
        name,
        inline_policy_name,
        ..
    } = plan
    else {
        return Ok(());
    };
    let resource = format!("iamRole:{name}");
    let Some(role) = get_role(c, name).await? else {
        return Ok(());
    };
    if !owner.owns(role.tags().iter().map(|t| (t.key(), t.value()))) {
        return Ok(());
    }
    match policy {
        DeletionPolicy::Retain => {
            let ours: Vec<String> = role
                .tags()
                .iter()
                .map(|t| t.key().to_string())
                .filter(|k| k.starts_with(TAG_PREFIX))
                .collect();
            untag(c, name, ours).await
        }
        DeletionPolicy::Delete => {
            match c
                .iam
                .delete_role_policy()
                .role_name(name)
                .policy_name(inline_policy_name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_kind(&e, DeleteRolePolicyError::is_no_such_entity_exception) => {}
                Err(e) => return Err(classify("DeleteRolePolicy", &resource, e)),
            }
            match c.iam.delete_role().role_name(name).send().await {
                Ok(_) => Ok(()),
                Err(e) if is_kind(&e, DeleteRoleError::is_no_such_entity_exception) => Ok(()),
                Err(e) if is_kind(&e, DeleteRoleError::is_delete_conflict_exception) => Err(AwsError::Terminal {
                    operation: "DeleteRole".into(),
                    resource,
                    code: "DeleteConflict".into(),
                    message: format!(
                        "the role still has policies or instance profiles mlobs did not add ({}); remove them, or set deletionPolicy: Retain",
                        e.message().unwrap_or("no detail")
                    ),
                }),
                Err(e) => Err(classify("DeleteRole", &resource, e)),
            }
        }
    }
}

/// `Some(actual, for the drift record)` when the stored document is absent or differs from `want`.
fn differs(want: &Value, have: Option<&Result<Value, String>>) -> Option<String> {
    match have {
        Some(Ok(v)) if normalize(v) == normalize(want) => None,
        Some(Ok(v)) => Some(shown(v)),
        Some(Err(raw)) => Some(raw.clone()),
        None => Some(ABSENT.into()),
    }
}

fn shown(v: &Value) -> String {
    normalize(v).to_string()
}

/// IAM returns policy documents URL-encoded (RFC 3986; moto does the same): decode, then parse.
/// `Err` carries the decoded text when it is not JSON.
pub fn decode_policy(raw: &str) -> Result<Value, String> {
    let text = percent_decode(raw);
    serde_json::from_str(&text).map_err(|_| text)
}

/// Decodes `%XX` escapes. `+` stays `+`: these documents are RFC 3986-encoded, not form-encoded,
/// and `+` is literal in them. Malformed escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// IAM semantics, not text: key order is irrelevant, so are the order and duplicates of array
/// elements (statements, actions, resources, condition values), and `"x"` means `["x"]`.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalize).collect();
            items.sort_by_cached_key(Value::to_string);
            items.dedup();
            match items.len() {
                1 => items.pop().unwrap_or(Value::Null),
                _ => Value::Array(items),
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A listed role of pipeline `pipeline` (no tag: `None`), its documents URL-encoded as IAM
    /// returns them.
    fn detail(name: &str, pipeline: Option<&str>, trust: &str, inline: &str) -> aws_sdk_iam::types::RoleDetail {
        let enc = |s: &str| s.replace('{', "%7B").replace('}', "%7D").replace('"', "%22");
        let mut b = aws_sdk_iam::types::RoleDetail::builder()
            .role_name(name)
            .arn(format!("arn:aws:iam::123456789012:role/{name}"))
            .assume_role_policy_document(enc(trust))
            .role_policy_list(
                aws_sdk_iam::types::PolicyDetail::builder()
                    .policy_name("mlobs")
                    .policy_document(enc(inline))
                    .build(),
            )
            .tags(Tag::builder().key("z").value("last").build().expect("tag"));
        if let Some(p) = pipeline {
            b = b.tags(
                Tag::builder()
                    .key(super::super::TAG_PIPELINE)
                    .value(p)
                    .build()
                    .expect("tag"),
            );
        }
        b.build()
    }

    #[test]
    fn a_listed_role_keeps_digests_its_tags_sorted_and_only_what_keep_accepts() {
        let trust = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"sts:AssumeRole"}}"#;
        let inline = r#"{"Statement":[{"Action":["b","a"],"Effect":"Allow","Resource":"*"}]}"#;
        let all = |_: &str| true;
        let (name, r) = observed_role(&detail("r1", Some("team-a/train"), trust, inline), &all).expect("ours");
        assert_eq!(name, "r1");
        let parsed = |s: &str| serde_json::from_str::<Value>(s).expect("JSON");
        assert_eq!(r.trust, Some(DocDigest::of(&parsed(trust))));
        // Equal as `differs` compares: another order, a single-element array for its element.
        let same = json!({"Statement": {"Resource": "*", "Effect": "Allow", "Action": ["a", "b", "a"]}});
        assert_eq!(r.inline("mlobs"), Some(DocDigest::of(&same)));
        assert_ne!(r.inline("mlobs"), r.trust);
        assert_eq!(r.inline("other"), None);
        assert_eq!(
            r.tags().collect::<Vec<_>>(),
            [("mlobs.io/pipeline", "team-a/train"), ("z", "last")]
        );
        assert_eq!(r.tag("z"), Some("last"));

        // Not ours, or another shard's: left out.
        assert!(observed_role(&detail("r2", None, trust, inline), &all).is_none());
        let team_b = |p: &str| p.starts_with("team-b/");
        assert!(observed_role(&detail("r3", Some("team-a/train"), trust, inline), &team_b).is_none());
        assert!(observed_role(&detail("r4", Some("team-b/train"), trust, inline), &team_b).is_some());
    }

    #[test]
    fn a_stored_document_that_is_not_json_never_equals_a_json_one() {
        assert_eq!(DocDigest::of_stored("%7B%7D"), DocDigest::of(&json!({})));
        // The text `"x"` is not the JSON string "x".
        assert_ne!(DocDigest::of_stored("x"), DocDigest::of(&json!("x")));
        assert_ne!(DocDigest::of_stored("x"), DocDigest::of_stored("y"));
    }

    #[test]
    fn percent_decode_handles_escapes_utf8_and_leaves_plus_alone() {
        assert_eq!(percent_decode("%7B%22a%22%3A%20%22b%2Bc+d%22%7D"), r#"{"a": "b+c+d"}"#);
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%7b"), "{");
    }

    #[test]
    fn normalize_ignores_order_duplicates_and_single_element_arrays() {
        let a = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["b", "a"], "Resource": ["r"]},
            {"Effect": "Deny", "Action": "x", "Resource": "r"}]});
        let b = json!({"Statement": [
            {"Resource": "r", "Action": "x", "Effect": "Deny"},
            {"Action": ["a", "b", "a"], "Effect": "Allow", "Resource": "r"}], "Version": "2012-10-17"});
        assert_eq!(normalize(&a), normalize(&b));
        let c = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["a"], "Resource": "r"}]});
        assert_ne!(normalize(&a), normalize(&c));
    }

    #[test]
    fn decode_policy_reports_undecodable_text() {
        assert_eq!(decode_policy("%7B%7D"), Ok(json!({})));
        assert_eq!(decode_policy("not%20json"), Err("not json".to_string()));
    }
}

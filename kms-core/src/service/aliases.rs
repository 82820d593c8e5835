//! Aliases, descriptions and tags: the checks of `Alias`, `Description`, `Tags` and
//! `TagFilters`, and the actions UpdateAlias and UpdateKeyDescription.

use super::*;

/// The most tags a key or data key carries.
pub const MAX_TAGS: usize = 50;

/// A list parameter of JSON objects: absent or null is the empty list; anything that
/// is not a list of `T` is `InvalidParameter` with `what_it_must_be`.
fn parse_list<T: DeserializeOwned>(v: Option<&Value>, what_it_must_be: &str) -> KmsResult<Vec<T>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    serde_json::from_value(v.clone()).map_err(|_| err(ErrorCode::InvalidParameter, what_it_must_be))
}

/// `Tags` of CreateKey, GenerateDataKey and ImportDataKey: `[{"TagKey", "TagValue"}]`.
pub(super) fn parse_tags(v: Option<&Value>) -> KmsResult<Vec<Tag>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Wire {
        tag_key: Option<String>,
        tag_value: Option<String>,
    }
    let wire: Vec<Wire> = parse_list(v, "Tags must be a list of {\"TagKey\", \"TagValue\"}")?;
    if wire.len() > MAX_TAGS {
        return Err(err(
            ErrorCode::LimitExceeded,
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut tags: Vec<Tag> = Vec::with_capacity(wire.len());
    for w in wire {
        let key = w.tag_key.unwrap_or_default();
        if key.is_empty() || key.len() > 255 {
            return Err(err(
                ErrorCode::InvalidParameterValue,
                "a TagKey must be 1 to 255 bytes",
            ));
        }
        if tags.iter().any(|t| t.key == key) {
            return Err(err(
                ErrorCode::InvalidParameterValueTagKeysDuplicated,
                format!("TagKey {key:?} is given twice"),
            ));
        }
        let value = w.tag_value.unwrap_or_default();
        if value.len() > 255 {
            return Err(err(
                ErrorCode::InvalidParameterValue,
                "a TagValue must be at most 255 bytes",
            ));
        }
        tags.push(Tag { key, value });
    }
    Ok(tags)
}

/// One filter of `TagFilters`: a key and, when non-empty, the values that match.
pub(super) struct TagFilter {
    key: String,
    values: Vec<String>,
}

/// `TagFilters` of ListKeyDetail and ListDataKeyDetail: `[{"TagKey", "TagValue": [..]}]`.
pub(super) fn parse_tag_filters(v: Option<&Value>) -> KmsResult<Vec<TagFilter>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Wire {
        tag_key: Option<String>,
        tag_value: Option<Vec<String>>,
    }
    let wire: Vec<Wire> = parse_list(
        v,
        "TagFilters must be a list of {\"TagKey\", \"TagValue\": [..]}",
    )?;
    wire.into_iter()
        .map(|w| match w.tag_key.filter(|k| !k.is_empty()) {
            Some(key) => Ok(TagFilter {
                key,
                values: w.tag_value.unwrap_or_default(),
            }),
            None => Err(err(
                ErrorCode::InvalidParameterValue,
                "every TagFilter needs a TagKey",
            )),
        })
        .collect()
}

/// Whether `tags` pass every filter: the filter's key is present and, if the
/// filter lists values, its value is one of them.
pub(super) fn tags_match(tags: &[Tag], filters: &[TagFilter]) -> bool {
    filters.iter().all(|f| {
        tags.iter()
            .any(|t| t.key == f.key && (f.values.is_empty() || f.values.contains(&t.value)))
    })
}

/// Checks an alias: 1–60 of `[A-Za-z0-9_-]`, starting with a letter or digit,
/// not `kms-…` (reserved). `alias/NAME` names the key wherever a KeyId is taken
/// (an extension: Tencent's KeyId is the key id only); a bare alias is not
/// accepted there, so an alias can never be mistaken for a key id.
pub fn validate_alias(alias: &str) -> KmsResult<()> {
    let bad = |why: &str| {
        err(
            ErrorCode::InvalidParameterValueInvalidAlias,
            format!("invalid Alias {alias:?}: {why}"),
        )
    };
    if alias.is_empty() || alias.len() > 60 {
        return Err(bad("it must be 1 to 60 characters"));
    }
    if !alias
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("only letters, digits, '-' and '_' are allowed"));
    }
    if !alias.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("it must start with a letter or a digit"));
    }
    if alias.starts_with("kms-") {
        return Err(bad("the prefix kms- is reserved"));
    }
    Ok(())
}

pub(super) fn check_description(d: &str) -> KmsResult<()> {
    if d.len() > MAX_DESCRIPTION {
        return Err(err(
            ErrorCode::InvalidParameterValue,
            format!("Description is longer than {MAX_DESCRIPTION} bytes"),
        ));
    }
    Ok(())
}

impl KmsService {
    /// UpdateAlias.
    ///
    /// # Errors
    /// `InvalidParameterValue.InvalidAlias`, `.AliasAlreadyExists`,
    /// `ResourceUnavailable.KeyPendingDelete`.
    pub fn update_alias(&self, ctx: &CallContext, req: UpdateAliasRequest) -> KmsResult<Empty> {
        let alias = req.alias.clone();
        self.audited_key(ctx, "UpdateAlias", &req.key_id, |now| {
            let alias = require(&alias, "Alias")?.to_owned();
            validate_alias(&alias)?;
            let key = require(&req.key_id, "KeyId")?;
            self.store.transact(now, |txn| {
                let i = txn.resolve(key).ok_or_else(|| not_found(key))?;
                if txn.keys[i].state == KeyState::PendingDelete {
                    return Err(state_error(&txn.keys[i]));
                }
                if txn
                    .keys
                    .iter()
                    .enumerate()
                    .any(|(j, k)| j != i && k.alias == alias)
                {
                    return Err(err(
                        ErrorCode::InvalidParameterValueAliasAlreadyExists,
                        format!("the alias {alias:?} is already used"),
                    ));
                }
                txn.keys[i].alias = alias;
                Ok((Empty {}, txn.keys[i].key_id.clone()))
            })
        })
    }

    /// UpdateKeyDescription.
    ///
    /// # Errors
    /// `InvalidParameterValue` (too long), `ResourceUnavailable.KeyPendingDelete`.
    pub fn update_key_description(
        &self,
        ctx: &CallContext,
        req: UpdateKeyDescriptionRequest,
    ) -> KmsResult<Empty> {
        let d = req.description.clone();
        self.modify(ctx, "UpdateKeyDescription", &req.key_id, |rec, _, _| {
            let d = d.ok_or_else(|| {
                err(
                    ErrorCode::MissingParameter,
                    "the parameter Description is required",
                )
            })?;
            check_description(&d)?;
            if rec.state == KeyState::PendingDelete {
                return Err(state_error(rec));
            }
            rec.description = d;
            Ok(Empty {})
        })
    }
}

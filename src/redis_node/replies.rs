//! Reading the Lua scripts' replies: a grant's (granted, quarantined, or refused with the
//! holder and the first in line), a join's, and the flat `field, value, ...` arrays and bulk
//! strings they are made of.

use std::time::Duration;

use redis::Value;

use crate::backend::{GrantReply, JoinReply};
use crate::holder::HolderInfo;

/// The prefix of the fields that name the waiter first in line in a grant's refusal.
const HEAD: &str = "head:";

pub(super) fn parse_grant(v: Value) -> Option<GrantReply> {
    let Value::Array(items) = v else { return None };
    let int = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    match int(items.first()?)? {
        1 => Some(GrantReply::Granted {
            token: u64::try_from(int(items.get(1)?)?).ok()?,
        }),
        2 => Some(GrantReply::Quarantined {
            left: Duration::from_millis(u64::try_from(int(items.get(1)?)?).unwrap_or(0)),
        }),
        0 => {
            let pttl = int(items.get(1)?)?;
            // The first in line comes as `head:` fields after the holder's.
            let (head, holder): (Vec<_>, Vec<_>) = pairs(&items[2..])
                .into_iter()
                .partition(|(k, _)| k.starts_with(HEAD));
            let head = (!head.is_empty()).then(|| {
                let fields: Vec<_> = head
                    .into_iter()
                    .map(|(k, v)| (k[HEAD.len()..].to_owned(), v))
                    .collect();
                Box::new(HolderInfo::from_fields(&fields))
            });
            Some(GrantReply::Refused {
                pttl: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
                holder: HolderInfo::from_fields(&holder),
                head,
            })
        }
        _ => None,
    }
}

pub(super) fn parse_join(v: Value) -> Option<JoinReply> {
    let Value::Array(items) = v else { return None };
    let int = |i: usize| match items.get(i) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let ms = |n: i64| Duration::from_millis(u64::try_from(n).unwrap_or(0));
    match int(0)? {
        1 => Some(JoinReply::Joined {
            pttl: ms(int(1)?),
            ttl: ms(int(2)?),
        }),
        0 => Some(JoinReply::Ended),
        -1 => Some(JoinReply::Mismatch),
        2 => Some(JoinReply::Busy {
            left: ms(int(1)?),
            by: text(items.get(2)?)?,
        }),
        _ => None,
    }
}

/// Turn a flat `field, value, ...` reply into pairs of strings.
pub(super) fn pairs(items: &[Value]) -> Vec<(String, String)> {
    items
        .chunks_exact(2)
        .filter_map(|kv| Some((text(&kv[0])?, text(&kv[1])?)))
        .collect()
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

//! Typed ids: an EC2 instance id is not any string.
//!
//! [`InstanceId`] is what discovery reads from AWS and what the scraper keys
//! its memory of an instance by. It is shared, not copied: a clone is a
//! reference count, so handing it to every record of every interval costs no
//! allocation.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// An EC2 instance id, e.g. `i-0123456789abcdef0`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// The id as AWS spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for InstanceId {
    fn from(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

impl From<String> for InstanceId {
    fn from(id: String) -> Self {
        Self(Arc::from(id))
    }
}

impl From<&String> for InstanceId {
    fn from(id: &String) -> Self {
        Self(Arc::from(id.as_str()))
    }
}

impl From<&InstanceId> for String {
    fn from(id: &InstanceId) -> Self {
        id.as_str().to_string()
    }
}

/// An id reads as the text it is (a function taking `&str` takes an id);
/// the other way, text becomes an id only through `From`.
impl std::ops::Deref for InstanceId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by id are looked up with a `&str` from a payload or a row.
impl Borrow<str> for InstanceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for InstanceId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<String> for InstanceId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<&str> for InstanceId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for InstanceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_map_keyed_by_id_is_read_with_a_str() {
        let id = InstanceId::from("i-0abc");
        let map = HashMap::from([(id.clone(), 1)]);
        assert_eq!(map.get("i-0abc"), Some(&1));
        assert_eq!(id, "i-0abc");
        assert_eq!(format!("{id} {id:?}"), r#"i-0abc "i-0abc""#);
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""i-0abc""#);
    }

    #[test]
    fn a_clone_shares_the_text() {
        let id = InstanceId::from("i-0abc".to_string());
        let clone = id.clone();
        assert!(std::ptr::eq(id.as_str(), clone.as_str()));
    }
}

//! The ids of records: [`DeviceId`], [`RuleId`], [`AlarmId`], [`CommandId`] (plain names,
//! checked in their constructors) and [`TokenId`].

use std::borrow::Borrow;
use std::fmt;

use crate::error::Error;
use crate::name::check_plain_name;

/// An id newtype: validated in `new`, displayed as its text.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks the syntax.
            pub fn new(id: impl Into<String>) -> Result<$name, Error> {
                let id = id.into();
                check_plain_name($what, &id)?;
                Ok($name(id))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A device id: 1-128 characters of `[A-Za-z0-9_.-]`; also its MQTT user name and a
    /// level of its topics.
    DeviceId,
    "device id"
);
id_type!(
    /// A rule id: 1-128 characters of `[A-Za-z0-9_.-]`; generated ones are `rule-` and 16
    /// hex digits.
    RuleId,
    "rule id"
);
id_type!(
    /// An alarm id: 1-128 characters of `[A-Za-z0-9_.-]`; generated ones are `alm-` and 16
    /// hex digits.
    AlarmId,
    "alarm id"
);
id_type!(
    /// A command id: 1-128 characters of `[A-Za-z0-9_.-]`; generated ones are `cmd-` and
    /// 16 hex digits.
    CommandId,
    "command id"
);

/// A token's id (not the secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenId(pub String);

//! Topic names (what a message is published to) and topic filters (what a subscription
//! matches), each validated once in its constructor.
//!
//! Both are UTF-8 without U+0000 and at most 65,535 bytes. A name has no wildcards; in a
//! filter `+` is a whole level and `#` a whole, last level. Both keep their text in a
//! shared, reference-counted buffer, so cloning a topic is cheap.

use bytestring::ByteString;

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters must have at least one character.
    #[error("topic is empty")]
    Empty,
    /// Longer than a two-byte length prefix can carry.
    #[error("topic is {0} bytes, more than the 65535 allowed")]
    TooLong(usize),
    /// U+0000 is forbidden in every MQTT string.
    #[error("topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#`.
    #[error("topic name contains wildcard '{0}'")]
    WildcardInName(char),
    /// `+` or `#` share a level with other characters, or `#` is not the last level.
    #[error("topic filter has '{0}' where a whole level is required")]
    MisplacedWildcard(char),
    /// A `$share/` filter without a group name or a filter after it.
    #[error("shared subscription must be $share/<group>/<filter>, with a group without wildcards")]
    InvalidShare,
}

fn check_common(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong(text.len()));
    }
    if text.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// A topic a message is published to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates `text` as a topic name.
    pub fn new(text: impl Into<ByteString>) -> Result<TopicName, TopicError> {
        let text = text.into();
        check_common(&text)?;
        // Both wildcards are ASCII, so a byte search finds them and is faster than decoding
        // characters on the decoder's hot path.
        if let Some(&wildcard) = text
            .as_bytes()
            .iter()
            .find(|byte| matches!(byte, b'+' | b'#'))
        {
            return Err(TopicError::WildcardInName(char::from(wildcard)));
        }
        Ok(TopicName(text))
    }

    /// The empty topic, legal only in a 5.0 `PUBLISH` that carries a topic alias.
    pub fn empty() -> TopicName {
        TopicName(ByteString::new())
    }

    /// The topic's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the empty topic of an aliased 5.0 publish.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the topic starts with `$` (such topics are not matched by leading wildcards).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The `/`-separated levels.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// The shared buffer holding the text.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription's topic filter, possibly with `+`/`#` wildcards and a `$share/{group}/`
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Validates `text` as a topic filter.
    pub fn new(text: impl Into<ByteString>) -> Result<TopicFilter, TopicError> {
        let text = text.into();
        check_common(&text)?;
        let mut levels = text.split('/').peekable();
        while let Some(level) = levels.next() {
            let is_last = levels.peek().is_none();
            if level.contains('#') && (level != "#" || !is_last) {
                return Err(TopicError::MisplacedWildcard('#'));
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::MisplacedWildcard('+'));
            }
        }
        let filter = TopicFilter(text);
        if filter.0.starts_with("$share/") && filter.share().is_none() {
            return Err(TopicError::InvalidShare);
        }
        Ok(filter)
    }

    /// The filter's text, including any `$share/{group}/` prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For `$share/{group}/{filter}`: the group and the filter that is matched.
    pub fn share(&self) -> Option<(&str, &str)> {
        let rest = self.0.strip_prefix("$share/")?;
        let (group, filter) = rest.split_once('/')?;
        if group.is_empty() || filter.is_empty() || group.contains(['+', '#']) {
            return None;
        }
        Some((group, filter))
    }

    /// The part that is matched against topic names (without a `$share/{group}/` prefix).
    pub fn pattern(&self) -> &str {
        self.share().map_or(&self.0, |(_, filter)| filter)
    }

    /// Whether the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.pattern().contains(['+', '#'])
    }

    /// Whether `topic` matches this filter, following the rule that a leading wildcard
    /// does not match a topic starting with `$`.
    pub fn matches(&self, topic: &TopicName) -> bool {
        let pattern = self.pattern();
        if topic.is_system() && pattern.starts_with(['+', '#']) {
            return false;
        }
        let mut filter_levels = pattern.split('/');
        let mut topic_levels = topic.levels();
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                (Some("#"), _) => return true,
                (Some(f), Some(t)) if f == "+" || f == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Whether every topic this filter can match is also matched by `other`: a
    /// subscription to this filter stays within what `other` allows. Shared
    /// subscriptions are compared by the filters they match (their `$share/{group}/`
    /// prefixes are ignored). Exact, for any two filters: `#` also matches its parent
    /// level, `+` exactly one (possibly empty) level, and a filter starting with a
    /// wildcard matches no topic starting with `$`.
    pub fn is_within(&self, other: &TopicFilter) -> bool {
        let (pattern, allowed) = (self.pattern(), other.pattern());
        // Topics starting with `$` are never matched by a leading wildcard.
        if pattern.starts_with('$') && allowed.starts_with(['+', '#']) {
            return false;
        }
        let mut levels = pattern.split('/');
        let mut allowed_levels = allowed.split('/');
        // Whether the levels compared so far spell the empty text, which is no topic: a
        // `#` there cannot match its parent level, so it matches what `+/#` matches.
        let mut is_prefix_empty = true;
        let mut is_first_level = true;
        loop {
            let level = levels.next();
            match (level, allowed_levels.next()) {
                // Whatever is left here, the allowed `#` matches it (nothing included).
                (_, Some("#")) => return true,
                (Some("#"), Some("+")) if is_prefix_empty => {
                    return allowed_levels.next() == Some("#");
                }
                // This `#` matches topics of any depth here; only a `#` covers them all.
                (Some("#"), _) => return false,
                // A `+` matches every level, which only another wildcard covers.
                (Some("+"), Some(allowed)) => {
                    if allowed != "+" {
                        return false;
                    }
                }
                (Some(level), Some(allowed)) => {
                    if allowed != "+" && allowed != level {
                        return false;
                    }
                }
                (None, None) => return true,
                (None, Some(_)) | (Some(_), None) => return false,
            }
            // Only an empty first level leaves the prefix empty.
            is_prefix_empty = is_first_level && level == Some("");
            is_first_level = false;
        }
    }
}

impl TopicFilter {
    /// Whether some topic may match both this filter and `other`: `false` only when
    /// none can (two levels differ and neither is a wildcard, or one filter is deeper
    /// with no `#` to cover it). Errs towards `true` (it ignores the rule for topics
    /// starting with `$`). Shared subscriptions are compared by the filters they match.
    pub fn may_overlap(&self, other: &TopicFilter) -> bool {
        let mut levels = self.pattern().split('/');
        let mut other_levels = other.pattern().split('/');
        loop {
            match (levels.next(), other_levels.next()) {
                (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
                (Some(level), Some(other)) => {
                    if level != other && level != "+" && other != "+" {
                        return false;
                    }
                }
                (None, Some(_)) | (Some(_), None) => return false,
            }
        }
    }
}

impl std::fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching_follows_the_spec_table() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "anything/at/all", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/broker/clients", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("$share/g/sensors/+", "sensors/a", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for (filter, topic, expected) in cases {
            let filter = TopicFilter::new(filter).expect("valid filter");
            let topic = TopicName::new(topic).expect("valid topic");
            assert_eq!(filter.matches(&topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn a_filter_is_within_another_when_every_topic_it_matches_is_matched_by_it() {
        let cases = [
            // Equal filters, and literals inside wildcards.
            ("a/b", "a/b", true),
            ("a/b", "a/+", true),
            ("a/b", "a/#", true),
            ("a/b/c", "a/#", true),
            ("a/b", "#", true),
            ("a/b", "+/+", true),
            ("a/b", "a/c", false),
            ("a/b", "a", false),
            ("a", "a/b", false),
            ("a/b", "a/b/c", false),
            // `#` also matches its parent level.
            ("a", "a/#", true),
            ("a/#", "a/#", true),
            ("a/#", "a/+", false),
            ("a/#", "a", false),
            ("a/#", "a/b/#", false),
            ("a/b/#", "a/#", true),
            ("a/b/#", "a/+/#", true),
            ("#", "#", true),
            // Topics have at least one level: a leading `#` matches what `+/#` matches.
            ("#", "+/#", true),
            ("#", "+/+/#", false),
            ("/#", "/+/#", true),
            ("a/#", "a/+/#", false),
            // `+` is one level, possibly empty.
            ("a/+", "a/+", true),
            ("a/+", "a/#", true),
            ("a/+", "a/b", false),
            ("a/+", "a/", false),
            ("a/", "a/+", true),
            ("a//b", "a/+/b", true),
            ("a/+/c", "a/+/+", true),
            ("a/+/+", "a/+/c", false),
            ("a/+", "a", false),
            ("a", "a/+", false),
            ("+", "#", true),
            ("+/+", "+/#", true),
            ("+/#", "+/+", false),
            // Topics starting with `$` are not matched by a leading wildcard.
            ("$SYS/broker", "#", false),
            ("$SYS/broker", "+/broker", false),
            ("$SYS/broker", "$SYS/#", true),
            ("$SYS/#", "#", false),
            ("+/broker", "#", true),
            // Shared subscriptions are judged by the filter they match.
            ("$share/g/a/b", "a/#", true),
            ("$share/g/a/#", "a/#", true),
            ("$share/g/#", "a/#", false),
            ("a/b", "$share/g/a/+", true),
        ];
        for (filter, allowed, expected) in cases {
            let filter = TopicFilter::new(filter).expect("valid filter");
            let allowed = TopicFilter::new(allowed).expect("valid filter");
            assert_eq!(
                filter.is_within(&allowed),
                expected,
                "{filter} within {allowed}"
            );
        }
    }

    /// Every sequence of up to `depth` levels drawn from `alphabet`, joined by `/`.
    fn level_sequences(alphabet: &[&str], depth: usize) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let mut previous: Vec<String> = vec![String::new()];
        for length in 1..=depth {
            let mut next = Vec::new();
            for prefix in &previous {
                for level in alphabet {
                    next.push(if length == 1 {
                        (*level).to_owned()
                    } else {
                        format!("{prefix}/{level}")
                    });
                }
            }
            all.extend(next.iter().cloned());
            previous = next;
        }
        all
    }

    #[test]
    fn being_within_agrees_with_matching_on_every_small_filter() {
        // Filters of up to three levels; topics one level deeper, with a level no filter
        // names, so that every filter that is not within another has a witness here.
        let filters: Vec<TopicFilter> = level_sequences(&["a", "", "$s", "+", "#"], 3)
            .into_iter()
            .filter_map(|text| TopicFilter::new(text).ok())
            .collect();
        let topics: Vec<TopicName> = level_sequences(&["a", "", "$s", "c"], 4)
            .into_iter()
            .filter_map(|text| TopicName::new(text).ok())
            .collect();
        for filter in &filters {
            let matched: Vec<&TopicName> = topics
                .iter()
                .filter(|topic| filter.matches(topic))
                .collect();
            for allowed in &filters {
                let is_covered = matched.iter().all(|topic| allowed.matches(topic));
                assert_eq!(
                    filter.is_within(allowed),
                    is_covered,
                    "{filter} within {allowed}"
                );
            }
        }
    }

    #[test]
    fn invalid_filters_are_rejected() {
        for text in [
            "",
            "a/#/b",
            "a#",
            "a/b+",
            "+a",
            "$share/",
            "$share/g",
            "$share/g+/a",
            "a\0b",
        ] {
            assert!(
                TopicFilter::new(text).is_err(),
                "{text:?} should be invalid"
            );
        }
    }

    #[test]
    fn names_reject_wildcards_and_nulls() {
        assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName('+')));
        assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName('#')));
        assert_eq!(TopicName::new("a\0"), Err(TopicError::NullCharacter));
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert!(TopicName::new("/").is_ok());
    }

    #[test]
    fn overlapping_filters_are_found() {
        let filter = |text: &str| TopicFilter::new(text).expect("valid filter");
        let cases = [
            ("#", "test/nosubscribe", true),
            ("test/+", "test/nosubscribe", true),
            ("+/+", "test/nosubscribe", true),
            ("test/nosubscribe/#", "test/nosubscribe", true),
            ("$share/group/test/#", "test/nosubscribe", true),
            ("test/other", "test/nosubscribe", false),
            ("test", "test/nosubscribe", false),
            ("test/nosubscribe/deeper", "test/nosubscribe", false),
            ("+", "test/nosubscribe", false),
            ("a/+/c", "a/b/+", true),
        ];
        for (left, right, expected) in cases {
            assert_eq!(
                filter(left).may_overlap(&filter(right)),
                expected,
                "{left} ~ {right}"
            );
            assert_eq!(
                filter(right).may_overlap(&filter(left)),
                expected,
                "{right} ~ {left}"
            );
        }
    }
}

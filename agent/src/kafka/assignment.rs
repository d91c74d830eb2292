//! Decoding a consumer group member's assignment: the opaque bytes a
//! classic group's leader hands each member, in the consumer protocol's
//! `ConsumerProtocolAssignment` format (a version, then topic → partitions,
//! then user data).
//!
//! Parsed here rather than with `kafka-protocol`'s decoder: these bytes are
//! written by whatever client led the group, and that decoder reserves an
//! array's capacity from its count before reading any element, so a corrupt
//! count could ask for gigabytes. Here every count is checked against the
//! bytes that remain. Versions 0 to 3 share this layout, and later versions
//! may only append fields, which are ignored.

use super::TopicPartition;

/// The partitions `bytes` assigns; empty bytes (a member mid-rebalance) are
/// an empty assignment.
pub(super) fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.i16("the version")?;
    if version < 0 {
        return Err(format!("version {version} is negative"));
    }
    let topics = reader.count("the topic count", 2 + 4)?;
    let mut out = Vec::new();
    for _ in 0..topics {
        let topic = reader.string()?;
        let partitions = reader.count("a partition count", 4)?;
        for _ in 0..partitions {
            let partition = reader.i32("a partition")?;
            out.push(TopicPartition {
                topic: topic.clone(),
                partition,
            });
        }
    }
    out.sort();
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("{what} at byte {} runs past the end", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An array count, at most what the remaining bytes can hold with
    /// elements of at least `min_element` bytes.
    fn count(&mut self, what: &str, min_element: usize) -> Result<usize, String> {
        let at = self.at;
        let n = self.i32(what)?;
        let n = usize::try_from(n).map_err(|_| format!("{what} at byte {at} is {n}"))?;
        let room = (self.bytes.len() - self.at) / min_element;
        if n > room {
            return Err(format!(
                "{what} at byte {at} is {n}, more than the {} remaining bytes hold",
                self.bytes.len() - self.at
            ));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let at = self.at;
        let len = self.i16("a topic name's length")?;
        let len = usize::try_from(len).map_err(|_| format!("a topic name at byte {at} is null"))?;
        let b = self.take(len, "a topic name")?;
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("the topic name at byte {at} is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::consumer_protocol_assignment::{
        ConsumerProtocolAssignment, TopicPartition as WireTopicPartition,
    };
    use kafka_protocol::protocol::{Encodable as _, StrBytes};

    /// What a Java consumer's leader sends: the version, then the body,
    /// encoded by `kafka-protocol` (an encoder independent of the parser).
    fn encoded(version: i16, assignment: &ConsumerProtocolAssignment) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        assignment.encode(&mut out, version).expect("encode");
        out
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_owned(),
            partition,
        }
    }

    fn sample() -> ConsumerProtocolAssignment {
        ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![
                WireTopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_static_str("orders")))
                    .with_partitions(vec![2, 0]),
                WireTopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_static_str("payments")))
                    .with_partitions(vec![1]),
            ])
            .with_user_data(Some(bytes::Bytes::from_static(b"sticky-state")))
    }

    #[test]
    fn every_version_decodes_to_the_same_partitions() {
        for version in 0..=3 {
            let bytes = encoded(version, &sample());
            assert_eq!(
                decode_assignment(&bytes),
                Ok(vec![tp("orders", 0), tp("orders", 2), tp("payments", 1)]),
                "version {version}"
            );
        }
    }

    #[test]
    fn a_later_version_with_appended_fields_still_decodes() {
        let mut bytes = encoded(3, &sample());
        bytes[..2].copy_from_slice(&7i16.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(decode_assignment(&bytes).map(|a| a.len()), Ok(3));
    }

    #[test]
    fn empty_bytes_and_an_empty_assignment_are_no_partitions() {
        assert_eq!(decode_assignment(&[]), Ok(vec![]));
        let empty = encoded(1, &ConsumerProtocolAssignment::default());
        assert_eq!(decode_assignment(&empty), Ok(vec![]));
    }

    #[test]
    fn corrupt_bytes_are_errors_not_huge_allocations() {
        // A topic count of 2^31-1 with nothing after it.
        let huge = [0, 1, 0x7f, 0xff, 0xff, 0xff];
        let err = decode_assignment(&huge).expect_err("huge count");
        assert!(err.contains("more than the 0 remaining bytes"), "{err}");

        let mut truncated = encoded(1, &sample());
        truncated.truncate(12);
        let err = decode_assignment(&truncated).expect_err("truncated");
        assert!(err.contains("more than the 6 remaining bytes"), "{err}");
        // One topic whose name claims 9 bytes where 6 remain.
        let short_name = [0, 0, 0, 0, 0, 1, 0, 9, b'o', b'r', b'd', b'e', b'r', b's'];
        let err = decode_assignment(&short_name).expect_err("short name");
        assert!(err.contains("runs past the end"), "{err}");

        let negative = [0xff, 0xff];
        assert!(decode_assignment(&negative).is_err());
        let negative_count = [0, 0, 0xff, 0xff, 0xff, 0xfe];
        assert!(decode_assignment(&negative_count).is_err());
        let not_utf8 = [0, 0, 0, 0, 0, 1, 0, 1, 0xff, 0, 0, 0, 0];
        let err = decode_assignment(&not_utf8).expect_err("bad name");
        assert!(err.contains("not UTF-8"), "{err}");
    }
}

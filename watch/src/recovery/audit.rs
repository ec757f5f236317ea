//! The audit trail's format and its chain check, without I/O.
//!
//! One record per recovery decision, one line per record, eight tab-separated fields:
//!
//! ```text
//! seq  wall_ns  mono_ns  agent  child  outcome  detail  prev
//! 17   1765000000123456789  5012345678  unix:4242  31337  reaped_zero  exit=0 duration_ms=12  9f86d0…
//! ```
//!
//! * `seq`: 1 for the first record ever written, +1 per record, across rotations and restarts;
//! * `wall_ns`: wall-clock time (Unix epoch, ns); `mono_ns`: the observer's monotonic time;
//! * `agent`: the identity as event lines print it; `child`: the child's pid or `-`;
//! * `outcome`: a [`super::Outcome`] label (`spawned`, `reaped_zero`, `refused`, …);
//! * `detail`: `key=value` words (exit code or signal, duration, captured bytes, refusal
//!   reason), never a tab or a line break;
//! * `prev`: 64 hex digits, the chain link: SHA-256 of the previous line (without its newline),
//!   or HMAC-SHA256 of it under the audit key when `--recovery-audit-key-file` is given. The
//!   very first record carries 64 zeros. The first record of a rotated file carries the hash of
//!   the last record of the generation before, so the chain runs through every generation.
//!
//! Editing a line changes its hash and breaks the link in the line after it; deleting or
//! reordering lines breaks the sequence; cutting the tail is caught against an anchor
//! (`SEQ:HASH` of a later record, kept by the observer's state file). With a key nobody without
//! it can recompute a chain.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of a link: SHA-256 / HMAC-SHA256 output.
pub const HASH_LEN: usize = 32;
/// A chain link.
pub type Hash = [u8; HASH_LEN];
/// The link of the first record ever written.
pub const GENESIS: Hash = [0; HASH_LEN];
/// Fields per record.
pub const FIELDS: usize = 8;
/// Records longer than this are not ours (the writer caps `detail`).
pub const MAX_LINE: usize = 4096;
/// The longest `detail` written.
pub const MAX_DETAIL: usize = 1024;

/// How links are computed.
#[derive(Clone)]
pub enum Chain {
    /// SHA-256 of the previous line.
    Sha256,
    /// HMAC-SHA256 of the previous line under this key.
    Hmac(zeroize::Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Chain::Sha256 => "Chain::Sha256",
            Chain::Hmac(_) => "Chain::Hmac(..)",
        })
    }
}

impl Chain {
    /// The link that the record after `line` (without its newline) must carry.
    #[must_use]
    pub fn link(&self, line: &[u8]) -> Hash {
        match self {
            Chain::Sha256 => Sha256::digest(line).into(),
            Chain::Hmac(key) => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key[..]) else {
                    // HMAC takes keys of any length; this arm cannot be reached.
                    return GENESIS;
                };
                mac.update(line);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

/// One record, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Wall clock, ns since the Unix epoch.
    pub wall_ns: u64,
    /// Observer monotonic time, ns.
    pub mono_ns: u64,
    /// Agent identity.
    pub agent: &'a str,
    /// Child pid.
    pub child: Option<u32>,
    /// Outcome label.
    pub outcome: &'a str,
    /// `key=value` words.
    pub detail: &'a str,
    /// Link to the previous record.
    pub prev: Hash,
}

/// Lowercase hex of a hash.
#[must_use]
pub fn hex(h: &Hash) -> String {
    use std::fmt::Write;
    h.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses 64 hex digits.
#[must_use]
pub fn parse_hex(s: &str) -> Option<Hash> {
    let b = s.as_bytes();
    if b.len() != 2 * HASH_LEN {
        return None;
    }
    let mut out = [0u8; HASH_LEN];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(d(pair[0])? * 16 + d(pair[1])?).ok()?;
    }
    Some(out)
}

/// Makes free text safe for a field: tabs, line breaks and other control characters become
/// spaces; capped at [`MAX_DETAIL`] bytes (on a character boundary); empty becomes `-`.
#[must_use]
pub fn sanitize(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

impl Record<'_> {
    /// The line, without its newline. Fields are written as given: callers pass `agent`,
    /// `outcome` and `detail` through [`sanitize`] (the writer does).
    #[must_use]
    pub fn emit(&self) -> String {
        let child = self.child.map_or_else(|| "-".to_owned(), |c| c.to_string());
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.seq,
            self.wall_ns,
            self.mono_ns,
            self.agent,
            child,
            self.outcome,
            self.detail,
            hex(&self.prev)
        )
    }
}

/// Why a line is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// Not [`FIELDS`] tab-separated fields.
    #[error("expected {FIELDS} tab-separated fields, found {0}")]
    FieldCount(usize),
    /// A number field is not a number.
    #[error("field {0} is not a number")]
    BadNumber(&'static str),
    /// The link is not 64 hex digits.
    #[error("link is not 64 hex digits")]
    BadLink,
    /// An empty text field.
    #[error("field {0} is empty")]
    Empty(&'static str),
}

/// Parses one line (without its newline).
///
/// # Errors
/// [`ParseError`] naming the first field that is wrong.
pub fn parse(line: &[u8]) -> Result<Record<'_>, ParseError> {
    if line.len() > MAX_LINE {
        return Err(ParseError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let f: Vec<&str> = text.split('\t').collect();
    if f.len() != FIELDS {
        return Err(ParseError::FieldCount(f.len()));
    }
    let num = |s: &str, name: &'static str| -> Result<u64, ParseError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadNumber(name));
        }
        s.parse().map_err(|_| ParseError::BadNumber(name))
    };
    let text_field = |s: &'static str, v: &str| {
        if v.is_empty() {
            Err(ParseError::Empty(s))
        } else {
            Ok(())
        }
    };
    text_field("agent", f[3])?;
    text_field("outcome", f[5])?;
    text_field("detail", f[6])?;
    let child = if f[4] == "-" {
        None
    } else {
        Some(u32::try_from(num(f[4], "child")?).map_err(|_| ParseError::BadNumber("child"))?)
    };
    Ok(Record {
        seq: num(f[0], "seq")?,
        wall_ns: num(f[1], "wall_ns")?,
        mono_ns: num(f[2], "mono_ns")?,
        agent: f[3],
        child,
        outcome: f[5],
        detail: f[6],
        prev: parse_hex(f[7]).ok_or(ParseError::BadLink)?,
    })
}

/// Where the chain of the verified files begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the genesis record (seq 1, zero link): nothing was rotated away.
    Genesis,
    /// At this record; earlier generations were rotated away (not an error).
    RotatedAway {
        /// The first sequence number present.
        seq: u64,
    },
    /// No records at all.
    Empty,
}

/// What is wrong where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The line is not a record (edited beyond the format, or cut mid-line).
    #[error("not an audit record ({0}): edited or damaged")]
    Malformed(ParseError),
    /// The line was edited: the next record's link does not match its hash.
    #[error("edited: its hash does not match the link in the next record (seq {next_seq}){hint}")]
    Edited {
        /// The record whose link disagrees.
        next_seq: u64,
        /// A hint for the first link checked (wrong key?).
        hint: &'static str,
    },
    /// Records are missing before this one.
    #[error("deleted: expected seq {expected}, found {found} ({} record(s) missing)", found - expected)]
    Deleted {
        /// The sequence number that should have come.
        expected: u64,
        /// The one that came.
        found: u64,
    },
    /// Records are out of order (or duplicated).
    #[error("reordered: expected seq {expected}, found {found}")]
    Reordered {
        /// The sequence number that should have come.
        expected: u64,
        /// The one that came.
        found: u64,
    },
    /// The last line has no newline: the file was cut.
    #[error("truncated: the last line is incomplete")]
    Incomplete,
    /// The chain ends before the anchor.
    #[error("truncated: the chain ends at seq {last}, the anchor is at seq {anchor}")]
    EndsBeforeAnchor {
        /// Last sequence number found.
        last: u64,
        /// The anchor's.
        anchor: u64,
    },
    /// The record at the anchor's sequence number does not hash to the anchor.
    #[error("edited: record seq {anchor} does not match the anchor's hash")]
    AnchorMismatch {
        /// The anchor's sequence number.
        anchor: u64,
    },
    /// The anchor's record was rotated away: it cannot be checked.
    #[error("anchor seq {anchor} is before the first record present (seq {first})")]
    AnchorBeforeStart {
        /// The anchor's sequence number.
        anchor: u64,
        /// The first present.
        first: u64,
    },
}

/// A break: which input (index into the files fed), which line (1-based), what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// Index of the file, in the order fed.
    pub file: usize,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: Problem,
}

/// The summary of an intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    /// Where it starts.
    pub start: Start,
    /// Records checked.
    pub records: u64,
    /// The last record's `(seq, hash)`.
    pub last: Option<(u64, Hash)>,
}

#[derive(Debug, Clone)]
struct Prev {
    file: usize,
    line: usize,
    seq: u64,
    hash: Hash,
}

/// A gap in the sequence, classified once the rest has been seen.
#[derive(Debug, Clone, Copy)]
struct Gap {
    file: usize,
    line: usize,
    expected: u64,
    found: u64,
}

/// The chain check, fed line by line (files in chain order: oldest generation first).
#[derive(Debug)]
pub struct Verifier {
    chain: Chain,
    prev: Option<Prev>,
    start: Start,
    records: u64,
    first_break: Option<Break>,
    gap: Option<Gap>,
    gap_filled: bool,
    anchor: Option<(u64, Hash)>,
    anchor_seen: bool,
}

impl Verifier {
    /// A verifier for links of `chain`, checking `anchor` (`seq`, hash of that record) at the
    /// end if given.
    #[must_use]
    pub fn new(chain: Chain, anchor: Option<(u64, Hash)>) -> Verifier {
        Verifier {
            chain,
            prev: None,
            start: Start::Empty,
            records: 0,
            first_break: None,
            gap: None,
            gap_filled: false,
            anchor,
            anchor_seen: false,
        }
    }

    fn brk(&mut self, file: usize, line: usize, problem: Problem) {
        if self.first_break.is_none() {
            self.first_break = Some(Break {
                file,
                line,
                problem,
            });
        }
    }

    /// Feeds one line of file number `file` (1-based `line`), without its newline;
    /// `complete` is false for a last line that had no newline.
    pub fn feed(&mut self, file: usize, line: usize, bytes: &[u8], complete: bool) {
        if let Some(g) = self.gap {
            // A record from inside a gap arriving later: the lines were reordered, not lost.
            if let Ok(r) = parse(bytes) {
                if (g.expected..g.found).contains(&r.seq) {
                    self.gap_filled = true;
                }
            }
        }
        if self.first_break.is_some() {
            return;
        }
        if !complete {
            self.brk(file, line, Problem::Incomplete);
            return;
        }
        let rec = match parse(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.brk(file, line, Problem::Malformed(e));
                return;
            }
        };
        let hash = self.chain.link(bytes);
        if let Some((aseq, ahash)) = self.anchor {
            if rec.seq == aseq {
                self.anchor_seen = true;
                if hash != ahash {
                    self.brk(file, line, Problem::AnchorMismatch { anchor: aseq });
                    return;
                }
            }
        }
        match self.prev.take() {
            None => {
                self.start = if rec.seq == 1 && rec.prev == GENESIS {
                    Start::Genesis
                } else {
                    Start::RotatedAway { seq: rec.seq }
                };
            }
            Some(p) => {
                let expected = p.seq.saturating_add(1);
                if rec.seq > expected {
                    self.gap = Some(Gap {
                        file,
                        line,
                        expected,
                        found: rec.seq,
                    });
                    self.brk(
                        file,
                        line,
                        Problem::Deleted {
                            expected,
                            found: rec.seq,
                        },
                    );
                    return;
                }
                if rec.seq < expected {
                    self.brk(
                        file,
                        line,
                        Problem::Reordered {
                            expected,
                            found: rec.seq,
                        },
                    );
                    return;
                }
                if rec.prev != p.hash {
                    let hint = if self.records == 1 {
                        " (or a wrong --key-file)"
                    } else {
                        ""
                    };
                    self.brk(
                        p.file,
                        p.line,
                        Problem::Edited {
                            next_seq: rec.seq,
                            hint,
                        },
                    );
                    return;
                }
            }
        }
        self.records += 1;
        self.prev = Some(Prev {
            file,
            line,
            seq: rec.seq,
            hash,
        });
    }

    /// The verdict once every file is fed.
    ///
    /// # Errors
    /// The first [`Break`].
    pub fn finish(mut self) -> Result<Intact, Break> {
        if let Some(mut b) = self.first_break.take() {
            if let (Some(g), Problem::Deleted { expected, found }) = (self.gap, &b.problem) {
                if self.gap_filled && g.file == b.file && g.line == b.line {
                    b.problem = Problem::Reordered {
                        expected: *expected,
                        found: *found,
                    };
                }
            }
            return Err(b);
        }
        let last = self.prev.as_ref().map(|p| (p.seq, p.hash));
        if let Some((aseq, _)) = self.anchor {
            if !self.anchor_seen {
                let (file, line, lseq) = self
                    .prev
                    .as_ref()
                    .map_or((0, 0, 0), |p| (p.file, p.line, p.seq));
                let problem = match self.start {
                    Start::RotatedAway { seq } if aseq < seq => Problem::AnchorBeforeStart {
                        anchor: aseq,
                        first: seq,
                    },
                    _ => Problem::EndsBeforeAnchor {
                        last: lseq,
                        anchor: aseq,
                    },
                };
                return Err(Break {
                    file,
                    line,
                    problem,
                });
            }
        }
        Ok(Intact {
            start: self.start,
            records: self.records,
            last,
        })
    }
}

/// The last record of `tail` (the end of a file): its `(seq, hash)`, ignoring an incomplete
/// final line; `None` if `tail` holds no complete record line.
#[must_use]
pub fn last_record(chain: &Chain, tail: &[u8]) -> Option<(u64, Hash)> {
    let end = tail.iter().rposition(|b| *b == b'\n')?;
    let body = &tail[..end];
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line = &body[start..];
    parse(line).ok().map(|r| (r.seq, chain.link(line)))
}

/// Feeds a whole file's bytes to `v` as file number `file`.
pub fn feed_file(v: &mut Verifier, file: usize, bytes: &[u8]) {
    let mut lines = bytes.split(|b| *b == b'\n').peekable();
    let mut n = 0;
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if last && line.is_empty() {
            break;
        }
        n += 1;
        v.feed(file, n, line, !last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(chain: &Chain, n: u64, start_seq: u64, start_prev: Hash) -> Vec<String> {
        let mut prev = start_prev;
        (0..n)
            .map(|i| {
                let line = Record {
                    seq: start_seq + i,
                    wall_ns: 1_700_000_000_000_000_000 + i,
                    mono_ns: 1000 * i,
                    agent: "unix:42",
                    child: Some(100 + i as u32),
                    outcome: "spawned",
                    detail: "reason=stall",
                    prev,
                }
                .emit();
                prev = chain.link(line.as_bytes());
                line
            })
            .collect()
    }

    fn verify(
        chain: Chain,
        lines: &[String],
        anchor: Option<(u64, Hash)>,
    ) -> Result<Intact, Break> {
        let mut v = Verifier::new(chain, anchor);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        feed_file(&mut v, 0, text.as_bytes());
        v.finish()
    }

    #[test]
    fn records_round_trip() {
        let l = &chain_of(&Chain::Sha256, 1, 1, GENESIS)[0];
        let r = parse(l.as_bytes()).unwrap();
        assert_eq!(r.seq, 1);
        assert_eq!(r.child, Some(100));
        assert_eq!(r.emit(), *l);
        assert_eq!(parse(b"1\t2"), Err(ParseError::FieldCount(2)));
        assert_eq!(sanitize("a\tb\nc"), "a b c");
        assert_eq!(sanitize(""), "-");
    }

    #[test]
    fn intact_chain_and_each_kind_of_tampering() {
        let c = Chain::Sha256;
        let lines = chain_of(&c, 6, 1, GENESIS);
        let ok = verify(c.clone(), &lines, None).unwrap();
        assert_eq!(ok.start, Start::Genesis);
        assert_eq!(ok.records, 6);

        let mut edited = lines.clone();
        edited[2] = edited[2].replace("reason=stall", "reason=crash");
        let b = verify(c.clone(), &edited, None).unwrap_err();
        assert_eq!(b.line, 3);
        assert!(matches!(b.problem, Problem::Edited { next_seq: 4, .. }));

        let mut deleted = lines.clone();
        deleted.remove(3);
        let b = verify(c.clone(), &deleted, None).unwrap_err();
        assert_eq!(
            (b.line, b.problem),
            (
                4,
                Problem::Deleted {
                    expected: 4,
                    found: 5
                }
            )
        );

        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        let b = verify(c.clone(), &swapped, None).unwrap_err();
        assert_eq!(
            (b.line, b.problem),
            (
                3,
                Problem::Reordered {
                    expected: 3,
                    found: 4
                }
            )
        );

        let cut = format!("{}\n{}", lines[0], &lines[1][..20]);
        let mut v = Verifier::new(c.clone(), None);
        feed_file(&mut v, 0, cut.as_bytes());
        let b = v.finish().unwrap_err();
        assert_eq!((b.line, b.problem), (2, Problem::Incomplete));
    }

    #[test]
    fn anchor_catches_a_cut_tail_and_an_edited_last_line() {
        let c = Chain::Sha256;
        let lines = chain_of(&c, 5, 1, GENESIS);
        let anchor = (5, c.link(lines[4].as_bytes()));
        assert!(verify(c.clone(), &lines, Some(anchor)).is_ok());
        let b = verify(c.clone(), &lines[..3], Some(anchor)).unwrap_err();
        assert_eq!(b.problem, Problem::EndsBeforeAnchor { last: 3, anchor: 5 });
        let mut edited = lines.clone();
        edited[4] = edited[4].replace("spawned", "refused");
        let b = verify(c.clone(), &edited, Some(anchor)).unwrap_err();
        assert_eq!(
            (b.line, b.problem),
            (5, Problem::AnchorMismatch { anchor: 5 })
        );
    }

    #[test]
    fn rotated_start_is_reported_not_an_error_and_hmac_needs_the_key() {
        let key = Chain::Hmac(zeroize::Zeroizing::new([7; 32]));
        let lines = chain_of(&key, 4, 40, [9; 32]);
        let ok = verify(key.clone(), &lines, None).unwrap();
        assert_eq!(ok.start, Start::RotatedAway { seq: 40 });
        assert_eq!(ok.last.unwrap().0, 43);
        let b = verify(Chain::Sha256, &lines, None).unwrap_err();
        assert!(matches!(b.problem, Problem::Edited { hint, .. } if !hint.is_empty()));
        let wrong = Chain::Hmac(zeroize::Zeroizing::new([8; 32]));
        assert!(verify(wrong, &lines, None).is_err());
    }

    #[test]
    fn last_record_of_a_tail() {
        let c = Chain::Sha256;
        let lines = chain_of(&c, 3, 1, GENESIS);
        let text = format!("{}\n{}\n{}\npartial", lines[0], lines[1], lines[2]);
        let (seq, h) = last_record(&c, text.as_bytes()).unwrap();
        assert_eq!(seq, 3);
        assert_eq!(h, c.link(lines[2].as_bytes()));
        assert_eq!(last_record(&c, b"no newline"), None);
    }
}

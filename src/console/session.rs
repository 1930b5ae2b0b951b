//! Console sessions, kept on the server: a random id in the cookie stands for the SHA-256 of the
//! credential signed in with, a CSRF token, an expiry and the messages for the next page.
//!
//! The credential itself is never kept, only its hash, and it is resolved again on every
//! request (`api::access_for_key_hash`), so that revoking a key ends its sessions at once. The
//! map holds at most [`MAX_SESSIONS`]: signing in beyond that ends the session closest to its
//! expiry. Ids are looked up by their SHA-256, so the map holds nothing a cookie could be made
//! from. Sessions live in this process's memory: a restart signs everyone out, and each node of
//! a cluster keeps its own.

use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::secrets::{constant_time_eq, random_token, sha256_hex};

/// How long a session lasts after signing in.
pub const LIFETIME: SignedDuration = SignedDuration::from_hours(12);
/// Sessions kept at once.
pub const MAX_SESSIONS: usize = 1000;
/// Sessions kept at once for one credential: signing in again past it ends that credential's
/// oldest session, so that no key can push everyone else's sessions out.
pub const MAX_SESSIONS_PER_CREDENTIAL: usize = 16;
/// Failed sign-ins allowed per client address per minute.
pub const FAILED_SIGN_INS_PER_MINUTE: u32 = 10;
/// Client addresses whose failed sign-ins are counted at once.
const MAX_COUNTED_ADDRESSES: usize = 10_000;
/// Messages kept for the next page.
const MAX_NOTES: usize = 8;

/// What a session holds.
#[derive(Clone)]
pub struct Session {
    /// SHA-256 (hex) of the admin token or management key signed in with.
    pub key_hash: String,
    /// Who signed in, as the header shows it ("admin token", or the key's name and prefix).
    pub label: String,
    /// The token every form that changes something must carry.
    pub csrf: String,
    pub expires_at: Timestamp,
    /// Messages for the next page that is shown.
    notes: Vec<Note>,
}

/// A message for the next page: what an action did, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    pub text: String,
    /// Shown once in a field of its own, with a copy button: a secret that is never shown again.
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    Done,
    Failed,
}

/// Every session of this process, and the failed sign-ins per client address.
#[derive(Default)]
pub struct Sessions {
    by_id_hash: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl Sessions {
    /// Starts a session for the credential whose hash is `key_hash`; returns the id for the
    /// cookie.
    pub fn start(&self, key_hash: String, label: String, now: Timestamp) -> String {
        let id = random_token(32);
        let session =
            Session { key_hash, label, csrf: random_token(32), expires_at: now + LIFETIME, notes: Vec::new() };
        if let Ok(mut sessions) = self.by_id_hash.lock() {
            sessions.retain(|_, session| session.expires_at > now);
            let of_this_credential = sessions.values().filter(|other| other.key_hash == session.key_hash).count();
            if of_this_credential >= MAX_SESSIONS_PER_CREDENTIAL
                && let Some(oldest) = sessions
                    .iter()
                    .filter(|(_, other)| other.key_hash == session.key_hash)
                    .min_by_key(|(_, other)| other.expires_at)
                    .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
            if sessions.len() >= MAX_SESSIONS
                && let Some(first_to_end) =
                    sessions.iter().min_by_key(|(_, session)| session.expires_at).map(|(id, _)| id.clone())
            {
                sessions.remove(&first_to_end);
            }
            sessions.insert(sha256_hex(&id), session);
        }
        id
    }

    /// The session of this cookie id, while it lasts.
    pub fn get(&self, id: &str, now: Timestamp) -> Option<Session> {
        let mut sessions = self.by_id_hash.lock().ok()?;
        let hash = sha256_hex(id);
        match sessions.get(&hash) {
            Some(session) if session.expires_at > now => Some(session.clone()),
            Some(_) => {
                sessions.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// Ends a session (signing out, or a credential no longer valid).
    pub fn end(&self, id: &str) {
        if let Ok(mut sessions) = self.by_id_hash.lock() {
            sessions.remove(&sha256_hex(id));
        }
    }

    /// Keeps a message for the session's next page.
    pub fn note(&self, id: &str, note: Note) {
        if let Ok(mut sessions) = self.by_id_hash.lock()
            && let Some(session) = sessions.get_mut(&sha256_hex(id))
            && session.notes.len() < MAX_NOTES
        {
            session.notes.push(note);
        }
    }

    /// The messages kept for this page, now taken: each is shown once.
    pub fn take_notes(&self, id: &str) -> Vec<Note> {
        let Ok(mut sessions) = self.by_id_hash.lock() else { return Vec::new() };
        sessions.get_mut(&sha256_hex(id)).map(|session| std::mem::take(&mut session.notes)).unwrap_or_default()
    }

    /// Whether `address` may try to sign in now: fewer than [`FAILED_SIGN_INS_PER_MINUTE`]
    /// failures this minute.
    pub fn may_try(&self, address: IpAddr, now: Timestamp) -> bool {
        let minute = now.as_second() / 60;
        let Ok(failures) = self.failures.lock() else { return false };
        failures.get(&address).is_none_or(|(at, count)| *at != minute || *count < FAILED_SIGN_INS_PER_MINUTE)
    }

    /// Counts a failed sign-in from `address`.
    pub fn failed(&self, address: IpAddr, now: Timestamp) {
        let minute = now.as_second() / 60;
        let Ok(mut failures) = self.failures.lock() else { return };
        if failures.len() >= MAX_COUNTED_ADDRESSES {
            failures.retain(|_, (at, _)| *at == minute);
        }
        let entry = failures.entry(address).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
    }
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_session_is_found_by_its_id_until_it_expires_or_ends() {
        let sessions = Sessions::default();
        let id = sessions.start("hash".into(), "admin token".into(), now());
        let session = sessions.get(&id, now()).expect("started");
        assert_eq!(session.key_hash, "hash");
        assert!(session.csrf_matches(&session.csrf.clone()) && !session.csrf_matches(""));
        assert!(sessions.get("another id", now()).is_none());
        assert!(sessions.get(&id, now() + LIFETIME).is_none(), "expired");
        let id = sessions.start("hash".into(), "admin token".into(), now());
        sessions.end(&id);
        assert!(sessions.get(&id, now()).is_none(), "ended");
    }

    #[test]
    fn one_credential_signing_in_again_and_again_ends_only_its_own_oldest_sessions() {
        let sessions = Sessions::default();
        let admin = sessions.start("admin".into(), "admin token".into(), now());
        let first = sessions.start("narrow".into(), "a key".into(), now());
        for second in 1..=(MAX_SESSIONS as i64) {
            sessions.start("narrow".into(), "a key".into(), now() + SignedDuration::from_secs(second));
        }
        assert!(sessions.get(&admin, now()).is_some(), "another credential's session is kept");
        assert!(sessions.get(&first, now()).is_none(), "the key's own oldest session ended");
        let kept = sessions.by_id_hash.lock().unwrap().values().filter(|s| s.key_hash == "narrow").count();
        assert_eq!(kept, MAX_SESSIONS_PER_CREDENTIAL);
    }

    #[test]
    fn notes_are_shown_once() {
        let sessions = Sessions::default();
        let id = sessions.start("hash".into(), "admin token".into(), now());
        let note = Note { kind: NoteKind::Done, text: "Rotated.".into(), secret: Some("whsec_x".into()) };
        sessions.note(&id, note.clone());
        assert_eq!(sessions.take_notes(&id), [note]);
        assert!(sessions.take_notes(&id).is_empty());
    }

    #[test]
    fn the_map_is_bounded_by_ending_the_session_closest_to_its_end() {
        let sessions = Sessions::default();
        let first = sessions.start("first".into(), String::new(), now());
        for i in 1..MAX_SESSIONS {
            sessions.start(format!("k{i}"), String::new(), now() + SignedDuration::from_secs(i as i64));
        }
        assert!(sessions.get(&first, now()).is_some());
        let newest = sessions.start("newest".into(), String::new(), now() + SignedDuration::from_secs(5000));
        assert!(sessions.get(&first, now()).is_none(), "the oldest made room");
        assert!(sessions.get(&newest, now() + SignedDuration::from_secs(5000)).is_some());
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_and_minute() {
        let sessions = Sessions::default();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FAILED_SIGN_INS_PER_MINUTE {
            assert!(sessions.may_try(address, now()));
            sessions.failed(address, now());
        }
        assert!(!sessions.may_try(address, now()));
        assert!(sessions.may_try("192.0.2.2".parse().unwrap(), now()), "another address");
        assert!(sessions.may_try(address, now() + SignedDuration::from_mins(1)), "the next minute");
    }
}

//! A DNS server on 127.0.0.1 for the gateway's DKIM and SPF lookups, so that no test asks the
//! outside world: one per test process, answering TXT queries from records tests add (each test
//! uses its own domain names) and NXDOMAIN for everything else.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, Record, RecordType};

static RECORDS: Mutex<Option<HashMap<String, Vec<String>>>> = Mutex::new(None);
static SERVER: OnceLock<SocketAddr> = OnceLock::new();

/// The server's address, starting it on first use.
pub fn address() -> SocketAddr {
    *SERVER.get_or_init(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP port for the test DNS server");
        let address = socket.local_addr().unwrap();
        std::thread::spawn(move || serve(socket));
        address
    })
}

/// Publishes a TXT record (`name` without the trailing dot).
pub fn add_txt(name: &str, text: &str) {
    let mut records = RECORDS.lock().unwrap();
    records.get_or_insert_with(HashMap::new).entry(name.to_ascii_lowercase()).or_default().push(text.to_owned());
}

fn serve(socket: UdpSocket) {
    let mut buffer = [0u8; 4096];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer) else { continue };
        let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
        let mut response = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.authoritative = true;
        let mut found = false;
        for question in &query.queries {
            response.add_query(question.clone());
            let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
            let texts = RECORDS.lock().unwrap().as_ref().and_then(|records| records.get(&name).cloned());
            if let Some(texts) = texts {
                found = true;
                if question.query_type() == RecordType::TXT {
                    for text in texts {
                        // A TXT string is at most 255 bytes: longer values are split.
                        let chunks =
                            text.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
                        response.add_answer(Record::from_rdata(
                            question.name().clone(),
                            60,
                            RData::TXT(TXT::new(chunks)),
                        ));
                    }
                }
            }
        }
        if !found {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
        if let Ok(bytes) = response.to_vec() {
            let _ = socket.send_to(&bytes, peer);
        }
    }
}

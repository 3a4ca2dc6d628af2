//! A DNS server on 127.0.0.1 for `dns:` discovery tests, answering from a table the test
//! changes (hickory-proto encodes the messages).

use hickory_resolver::proto::{
    op::{Message, OpCode, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
};
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::{net::UdpSocket, sync::watch, task::JoinHandle};

/// What the test DNS server answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// These A records (and no AAAA), with this TTL.
    Records(Vec<Ipv4Addr>, u32),
    /// SERVFAIL.
    Fail,
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
}

/// A DNS server on 127.0.0.1 (UDP) answering every name from a table the test changes.
pub struct Dns {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    /// Queries answered with SERVFAIL or NXDOMAIN.
    pub failed: Arc<AtomicUsize>,
    /// A queries answered with records.
    pub answered: Arc<AtomicUsize>,
    /// While true, queries wait for an answer (see [`Dns::hold`]).
    held: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Dns {
    pub async fn start(answer: Answer) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let failed = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (table, fails, answers) = (answer.clone(), failed.clone(), answered.clone());
        let held = watch::Sender::new(false);
        let mut hold = held.subscribe();
        let task = tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(request) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let mut response = Message::response(request.metadata.id, OpCode::Query);
                response.metadata.recursion_desired = request.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                response.add_queries(request.queries.clone());
                if hold.wait_for(|held| !held).await.is_err() {
                    return;
                }
                let answer = table.lock().unwrap().clone();
                match answer {
                    Answer::Fail => {
                        response.metadata.response_code = ResponseCode::ServFail;
                        fails.fetch_add(1, Ordering::SeqCst);
                    }
                    Answer::NoSuchName => {
                        response.metadata.response_code = ResponseCode::NXDomain;
                        fails.fetch_add(1, Ordering::SeqCst);
                    }
                    Answer::Records(ips, ttl) => {
                        for query in &request.queries {
                            if query.query_type() == RecordType::A {
                                answers.fetch_add(1, Ordering::SeqCst);
                                for ip in &ips {
                                    response.add_answer(Record::from_rdata(
                                        query.name().clone(),
                                        ttl,
                                        RData::A(A(*ip)),
                                    ));
                                }
                            }
                        }
                    }
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), from).await;
            }
        });
        Self {
            addr,
            answer,
            failed,
            answered,
            held,
            task,
        }
    }

    /// Queries from now on wait, unanswered, until [`release`](Self::release): a slow first
    /// lookup.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Answers the queries held, and every one after, from the table.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

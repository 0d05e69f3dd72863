use std::time::{Duration, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};

use super::RemoteEmbedding;
use super::retry_after::{http_date, retry_after, retry_after_at};
use crate::embeddings::ServiceError;

fn function(texts: usize, chars: usize) -> RemoteEmbedding {
    RemoteEmbedding::builder("m")
        .base_url("http://127.0.0.1:1/v1")
        .no_api_key()
        .max_batch_texts(texts)
        .max_batch_chars(chars)
        .build()
        .unwrap()
}

#[test]
fn batches_are_bounded_by_count_and_characters() {
    let f = function(3, 10);
    let texts = [
        "aaaa",
        "bbbb",
        "cc",
        "d",
        "eeeeeeeeeeeeeeee",
        "f",
        "g",
        "h",
        "i",
    ];
    let batches = f
        .shared
        .batches(texts.iter().map(|t| (*t).to_owned()).collect());
    let sizes: Vec<Vec<&str>> = batches
        .iter()
        .map(|b| b.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        sizes,
        vec![
            vec!["aaaa", "bbbb", "cc"],
            vec!["d"],
            vec!["eeeeeeeeeeeeeeee"],
            vec!["f", "g", "h"],
            vec!["i"],
        ]
    );
}

#[test]
fn retry_after_headers_are_read() {
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("2"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
    headers.insert("retry-after-ms", HeaderValue::from_static("150"));
    assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
    let mut date = HeaderMap::new();
    date.insert(
        "retry-after",
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    // 1445412480 is 2015-10-21T07:28:00Z.
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    assert_eq!(
        retry_after_at(&date, at(1_445_412_480 - 90)),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        retry_after_at(&date, at(1_445_412_480 + 5)),
        Some(Duration::ZERO),
        "a date passed asks for no wait"
    );
    assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
    assert_eq!(
        http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
        Some(at(1_835_481_599))
    );
    for bad in [
        "Wed, 21 Oct 2015 07:28:00 UTC",
        "Wednesday, 21-Oct-15 07:28:00 GMT",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Okt 2015 07:28:00 GMT",
        "soon",
    ] {
        assert_eq!(http_date(bad), None, "{bad}");
    }
}

#[test]
fn settings_that_cannot_work_are_refused() {
    for builder in [
        RemoteEmbedding::builder("m").base_url("not a url"),
        RemoteEmbedding::builder("m").base_url("ftp://host/v1"),
        RemoteEmbedding::builder("m").max_in_flight(0),
        RemoteEmbedding::builder("m").header("bad header", "x"),
        RemoteEmbedding::builder("m").api_key("line\nbreak"),
    ] {
        let err = builder.build().unwrap_err();
        assert!(matches!(err, ServiceError::InvalidConfig { .. }), "{err}");
    }
}

//! The OpenAPI 3 document of the HTTP API, built from the wire types' schemas
//! (derived from `deed_client::api`) and the route table below, which mirrors the
//! router in [`crate::http`].

use deed_client::api::{
    AccountView, BlobInfo, BlockView, ChunkStored, ConsensusView, DirectRequest, DirectResponse,
    DisputeView, ErrorBody, ErrorCode, ExecutorView, FeesView, JobView, LicenceView, ModelView,
    NamedTensor, ReceiptView, Status, SubmitTx, TxState, TxSubmitted, TxView, UploadStatus,
    VersionView,
};
use utoipa::openapi::content::Content;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, ObjectBuilder, Type};
use utoipa::openapi::{InfoBuilder, OpenApiBuilder, Paths, Ref, RefOr, Required, Schema};

/// How a route's body or answer is described.
#[derive(Clone, Copy)]
enum Body {
    None,
    /// A component schema by name.
    Json(&'static str),
    /// A JSON array of a component schema.
    List(&'static str),
    /// Raw bytes.
    Bytes,
    /// Free-form JSON (the blob manifest, the document itself).
    AnyJson,
    /// Plain text.
    Text,
}

/// Every route: method, path, summary, request body, success status and answer.
const ROUTES: &[(HttpMethod, &str, &str, Body, &str, Body)] = &[
    (
        HttpMethod::Get,
        "/v1/status",
        "Node and chain status",
        Body::None,
        "200",
        Body::Json("Status"),
    ),
    (
        HttpMethod::Get,
        "/v1/blocks/{height}",
        "A committed block's header and transaction hashes",
        Body::None,
        "200",
        Body::Json("BlockView"),
    ),
    (
        HttpMethod::Get,
        "/v1/accounts/{address}",
        "An account's balance, nonce and executor bond",
        Body::None,
        "200",
        Body::Json("AccountView"),
    ),
    (
        HttpMethod::Post,
        "/v1/transactions",
        "Submit a signed transaction to the mempool",
        Body::Json("SubmitTx"),
        "202",
        Body::Json("TxSubmitted"),
    ),
    (
        HttpMethod::Get,
        "/v1/transactions/{hash}",
        "Where a transaction is",
        Body::None,
        "200",
        Body::Json("TxView"),
    ),
    (
        HttpMethod::Get,
        "/v1/models",
        "Models, filtered by `owner` and `name`; a page of `limit` (1 to 1000, default 100) after the id `after`",
        Body::None,
        "200",
        Body::List("ModelView"),
    ),
    (
        HttpMethod::Get,
        "/v1/models/{id}",
        "A model",
        Body::None,
        "200",
        Body::Json("ModelView"),
    ),
    (
        HttpMethod::Get,
        "/v1/models/{id}/versions",
        "A model's versions",
        Body::None,
        "200",
        Body::List("VersionView"),
    ),
    (
        HttpMethod::Get,
        "/v1/models/{id}/versions/{n}",
        "One version",
        Body::None,
        "200",
        Body::Json("VersionView"),
    ),
    (
        HttpMethod::Post,
        "/v1/blobs/uploads",
        "Start or resume an upload: the blob manifest in, the missing chunks out (a manifest cutting the blob into other chunks replaces the upload in progress and what it staged)",
        Body::AnyJson,
        "200",
        Body::Json("UploadStatus"),
    ),
    (
        HttpMethod::Get,
        "/v1/blobs/uploads/{cid}",
        "An upload in progress: the chunks the node still lacks",
        Body::None,
        "200",
        Body::Json("UploadStatus"),
    ),
    (
        HttpMethod::Put,
        "/v1/blobs/uploads/{cid}/chunks/{index}",
        "Upload one chunk (verified on arrival)",
        Body::Bytes,
        "200",
        Body::Json("ChunkStored"),
    ),
    (
        HttpMethod::Post,
        "/v1/blobs/uploads/{cid}/finish",
        "Verify the whole blob and make it visible",
        Body::None,
        "200",
        Body::Json("BlobInfo"),
    ),
    (
        HttpMethod::Get,
        "/v1/blobs/{cid}",
        "Blob bytes (a single `Range: bytes=` range is honoured)",
        Body::None,
        "200",
        Body::Bytes,
    ),
    (
        HttpMethod::Head,
        "/v1/blobs/{cid}",
        "Blob size",
        Body::None,
        "200",
        Body::None,
    ),
    (
        HttpMethod::Get,
        "/v1/blobs/{cid}/manifest",
        "A blob's chunk manifest",
        Body::None,
        "200",
        Body::AnyJson,
    ),
    (
        HttpMethod::Get,
        "/v1/jobs",
        "Jobs, filtered by `requester` and `executor`; a page of `limit` (1 to 1000, default 100) after the id `after`",
        Body::None,
        "200",
        Body::List("JobView"),
    ),
    (
        HttpMethod::Get,
        "/v1/jobs/{id}",
        "A job with its receipts",
        Body::None,
        "200",
        Body::Json("JobView"),
    ),
    (
        HttpMethod::Get,
        "/v1/disputes",
        "Disputes; a page of `limit` (1 to 1000, default 100) after the id `after`",
        Body::None,
        "200",
        Body::List("DisputeView"),
    ),
    (
        HttpMethod::Get,
        "/v1/disputes/{id}",
        "A dispute",
        Body::None,
        "200",
        Body::Json("DisputeView"),
    ),
    (
        HttpMethod::Post,
        "/v1/execute",
        "Direct call to this executor",
        Body::Json("DirectRequest"),
        "200",
        Body::Json("DirectResponse"),
    ),
    (
        HttpMethod::Get,
        "/v1/openapi.json",
        "This document",
        Body::None,
        "200",
        Body::AnyJson,
    ),
    (
        HttpMethod::Get,
        "/metrics",
        "Prometheus metrics",
        Body::None,
        "200",
        Body::Text,
    ),
];

fn content(b: Body) -> Option<(&'static str, Content)> {
    match b {
        Body::None => None,
        Body::Json(name) => Some((
            "application/json",
            Content::new(Some(Ref::from_schema_name(name))),
        )),
        Body::List(name) => Some((
            "application/json",
            Content::new(Some(RefOr::T(Schema::Array(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(name))
                    .build(),
            )))),
        )),
        Body::Bytes => Some((
            "application/octet-stream",
            Content::new(Some(RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Binary,
                    )))
                    .build(),
            )))),
        )),
        Body::AnyJson => Some((
            "application/json",
            Content::new(Some(RefOr::T(Schema::Object(ObjectBuilder::new().build())))),
        )),
        Body::Text => Some((
            "text/plain",
            Content::new(Some(RefOr::T(Schema::Object(
                ObjectBuilder::new().schema_type(Type::String).build(),
            )))),
        )),
    }
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Delete => "delete",
        HttpMethod::Options => "options",
        HttpMethod::Head => "head",
        HttpMethod::Patch => "patch",
        HttpMethod::Trace => "trace",
    }
}

/// The document, as JSON text.
pub fn document() -> String {
    let components = ComponentsBuilder::new()
        .schema_from::<Status>()
        .schema_from::<BlockView>()
        .schema_from::<ConsensusView>()
        .schema_from::<AccountView>()
        .schema_from::<ExecutorView>()
        .schema_from::<SubmitTx>()
        .schema_from::<TxSubmitted>()
        .schema_from::<TxState>()
        .schema_from::<TxView>()
        .schema_from::<LicenceView>()
        .schema_from::<ModelView>()
        .schema_from::<VersionView>()
        .schema_from::<UploadStatus>()
        .schema_from::<ChunkStored>()
        .schema_from::<BlobInfo>()
        .schema_from::<ReceiptView>()
        .schema_from::<FeesView>()
        .schema_from::<JobView>()
        .schema_from::<DisputeView>()
        .schema_from::<NamedTensor>()
        .schema_from::<DirectRequest>()
        .schema_from::<DirectResponse>()
        .schema_from::<ErrorCode>()
        .schema_from::<ErrorBody>()
        .build();
    let mut paths = Paths::new();
    for (method, path, summary, req, ok, resp) in ROUTES {
        let mut op = OperationBuilder::new()
            .summary(Some(*summary))
            .operation_id(Some(format!(
                "{}{}",
                method_name(method),
                path.replace(['/', '{', '}'], "_")
            )));
        for seg in path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
                );
            }
        }
        if let Some((ct, c)) = content(*req) {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(ct, c)
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let mut ok_resp = ResponseBuilder::new().description("success");
        if let Some((ct, c)) = content(*resp) {
            ok_resp = ok_resp.content(ct, c);
        }
        op = op.response(*ok, ok_resp.build()).response(
            "default",
            ResponseBuilder::new()
                .description("a typed error; the status comes from its code")
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build(),
        );
        paths.add_path_operation(path, vec![method.clone()], op.build());
    }
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Deed node API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Amounts are decimal strings, addresses EIP-55 hex, hashes 0x hex, CIDs base32.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build();
    doc.to_json().unwrap_or_else(|_| "{}".to_owned())
}

/// The paths the document lists, for the test that checks it against the router.
pub fn documented_routes() -> Vec<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p, ..)| (method_name(m).to_uppercase(), (*p).to_owned()))
        .collect()
}

//! `GET /v1/models` and `GET /v1/models/{id}`: every model any upstream serves, by id and
//! alias, with the upstreams serving it and its browser variants (Tandem's extension fields).

use axum::Json;
use axum::extract::{Path, State};

use crate::api::openapi::errors::{ModelErrors, ModelListErrors};
use crate::errors::ApiError;
use crate::gateway::upstream::ModelInfo;
use crate::openai::{ModelCard, ModelList};
use crate::state::SharedState;

fn cards(m: &ModelInfo, upstreams: &[String]) -> Vec<ModelCard> {
    std::iter::once(&m.name)
        .chain(&m.aliases)
        .map(|name| ModelCard {
            id: name.clone(),
            object: "model",
            created: m.created,
            owned_by: "tandem".into(),
            max_model_len: m.context_length,
            root: m.name.clone(),
            upstreams: upstreams.to_vec(),
            browser_variants: m.browser_variants.clone(),
        })
        .collect()
}

/// Lists the models.
///
/// Lists every model any upstream serves, by id and alias, with the upstreams serving it and
/// the files a browser can run it from.
#[utoipa::path(
    get,
    operation_id = "listModels",
    path = "/v1/models",
    tag = "OpenAI",
    responses(
        (status = 200, description = "The models", body = ModelList),
        ModelListErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn list(State(state): State<SharedState>) -> Result<Json<ModelList>, ApiError> {
    let gateway = &state.loaded()?.gateway;
    let data = gateway
        .models()
        .iter()
        .flat_map(|(m, ups)| cards(m, ups))
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

/// Describes a model.
///
/// Describes one model (an id or alias; ids may contain `/`).
#[utoipa::path(
    get,
    operation_id = "retrieveModel",
    path = "/v1/models/{*id}",
    tag = "OpenAI",
    params(("id" = String, Path, description = "The model's id or alias")),
    responses(
        (status = 200, description = "The model", body = ModelCard),
        ModelErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn get(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let gateway = &state.loaded()?.gateway;
    gateway
        .models()
        .iter()
        .flat_map(|(m, ups)| cards(m, ups))
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id))
}

//! `GET /v1/models` and `GET /v1/models/{id}`: every model any upstream serves, by id and
//! alias, with the upstreams serving it and its browser variants (Tandem's extension fields).

use axum::Json;
use axum::extract::{Path, State};

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

/// Lists every model id and alias.
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

/// Describes one model (by id or alias).
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

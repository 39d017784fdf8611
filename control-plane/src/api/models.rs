//! `GET /v1/models` and `GET /v1/models/{id}`: the served models and their aliases.

use axum::Json;
use axum::extract::{Path, State};

use super::errors::ApiError;
use crate::openai_types::{ModelCard, ModelList};
use crate::server::SharedState;
use crate::server::state::ModelHandle;

fn cards(m: &ModelHandle) -> impl Iterator<Item = ModelCard> + '_ {
    std::iter::once(&m.id)
        .chain(&m.aliases)
        .map(move |name| ModelCard {
            id: name.clone(),
            object: "model",
            created: m.created,
            owned_by: "tandem",
            max_model_len: m.context,
            root: m.id.clone(),
        })
}

/// Lists every model id and alias.
pub async fn list(State(state): State<SharedState>) -> Result<Json<ModelList>, ApiError> {
    let data = state.models()?.iter().flat_map(|m| cards(m)).collect();
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
    let model = state.model(Some(&id))?;
    cards(&model)
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id))
}

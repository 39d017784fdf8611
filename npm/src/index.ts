// @tandem-inference/web: run chat completions in the browser (WebGPU or WASM SIMD, in a Web
// Worker) or on a Tandem server, with the OpenAI client's shapes.

export {
  Tandem,
  ChatCompletionStream,
  type TandemOptions,
  type TandemPolicy,
  type TandemCapabilities,
  type VariantStatus,
  type LoadedEngineInfo,
  type ChatCompletionStreamRequest,
} from './tandem.js';
export {
  TandemError,
  TandemAPIError,
  TandemConnectionError,
  TandemAbortError,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionChoice,
  type ChatCompletionChunkChoice,
  type ChatCompletionChunkDelta,
  type ChatCompletionContentPart,
  type ChatCompletionContentPartText,
  type ChatCompletionCreateParams,
  type ChatCompletionCreateParamsBase,
  type ChatCompletionCreateParamsStreaming,
  type ChatCompletionCreateParamsNonStreaming,
  type ChatCompletionMessage,
  type ChatCompletionMessageParam,
  type ChatCompletionStreamOptions,
  type CompletionUsage,
  type FinishReason,
  type Model,
  type ModelList,
  type RequestOptions,
  type TandemInfo,
} from './openai.js';
export {
  decide,
  answerPath,
  totalMs,
  type Estimate,
  type RouteAnswer,
  type RouteRequest,
  type RoutingPolicy,
  type VariantRef,
} from './route.js';
export { EngineFailure } from './engine/types.js';
export type {
  BrowserEngine,
  BrowserVariant,
  DeviceReport,
  EngineEvent,
  EngineFailureKind,
  EngineMessage,
  EngineModule,
  EnginePath,
  EngineRequest,
  LoadOptions,
  LoadProgress,
  WasmSimd,
} from './engine/types.js';

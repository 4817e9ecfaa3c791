// Validates documents of `slipway export` against the Knative Serving and Gateway API
// schemas of @kubernetes-models (JSON Schema, AJV), for crates/slipway/tests/export.rs.
// Reads a JSON array of documents on stdin; prints one line per document; exits 1 if any
// fails and 2 if a document has a kind it has no schema for.
import { Service } from "@kubernetes-models/knative/serving.knative.dev/v1/Service";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";

const models = {
  "serving.knative.dev/v1/Service": Service,
  "gateway.networking.k8s.io/v1/HTTPRoute": HTTPRoute,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
let status = 0;
for (const doc of JSON.parse(input)) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const Model = models[key];
  if (!Model) {
    console.log(`NO SCHEMA ${key} ${doc.metadata?.name}`);
    status = Math.max(status, 2);
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`OK ${key} ${doc.metadata.name}`);
  } catch (error) {
    console.log(`INVALID ${key} ${doc.metadata?.name}: ${error.message}`);
    status = 1;
  }
}
process.exit(status);

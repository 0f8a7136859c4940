/* Renders /openapi.json with the vendored Swagger UI (see tally/ingest/api/docs_page.py).
   Paths are relative to /docs, so the page also works behind a proxy's path prefix. */
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,  // the default would send the document to validator.swagger.io
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});

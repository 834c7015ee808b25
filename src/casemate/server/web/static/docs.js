// The API documentation page (/api/v1/docs): the vendored Swagger UI on our OpenAPI schema.
// Nothing is fetched from another origin. "Authorize" takes a token (Bearer).

window.SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false,
});

// The GraphiQL page of the REC-Chain API: queries over HTTP POST, subscriptions over the
// graphql-transport-ws websocket of the same endpoint. `?q=` (and `variables=`) in the address
// pre-fill the editor, and the address follows the editor so a query can be shared (not `query=`:
// a GET with `query` is executed as GraphQL, not answered with this page).
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var endpoint = new URL(root.dataset.endpoint || "/graphql", window.location.href);
  var socket = new URL(endpoint.href);
  socket.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

  var params = new URLSearchParams(window.location.search);
  var DEFAULT_QUERY =
    "# REC-Chain GraphQL. Run with Ctrl-Enter; the Docs and Explorer panes list every field.\n" +
    "{\n  _meta {\n    block {\n      height\n      hash\n    }\n  }\n}\n";

  function remember(key, value) {
    if (value) {
      params.set(key, value);
    } else {
      params.delete(key);
    }
    var search = params.toString();
    window.history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  var fetcher = GraphiQL.createFetcher({ url: endpoint.href, subscriptionUrl: socket.href });
  var explorer = GraphiQLPluginExplorer.explorerPlugin();

  function App() {
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      plugins: [explorer],
      defaultQuery: DEFAULT_QUERY,
      query: params.get("q") || undefined,
      variables: params.get("variables") || undefined,
      onEditQuery: function (value) { remember("q", value); },
      onEditVariables: function (value) { remember("variables", value); },
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      inputValueDeprecation: true,
    });
  }

  ReactDOM.createRoot(root).render(React.createElement(App));
})();

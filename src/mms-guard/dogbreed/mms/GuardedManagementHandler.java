package dogbreed.mms;

import com.amazonaws.ml.mms.archive.ModelException;
import com.amazonaws.ml.mms.http.BadRequestException;
import com.amazonaws.ml.mms.http.ManagementRequestHandler;
import com.amazonaws.ml.mms.http.MethodNotAllowedException;
import com.amazonaws.ml.mms.archive.ModelNotFoundException;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.CharsetUtil;
import java.io.File;
import java.io.IOException;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * MMS's model-management API, restricted to what the SageMaker multi-model platform asks for.
 *
 * <p>MMS 1.1.11 registers whatever {@code POST /models} names: it downloads any http(s) URL,
 * loads any path under its model store ("/" in SageMaker images), imports the Python module
 * that the request's {@code handler} (or a MANIFEST.json in the folder) names, and scales a
 * model to any number of workers. This handler checks each management request before MMS's own
 * code runs it:
 *
 * <ul>
 *   <li>{@code POST /models} takes only a JSON body {@code {"model_name", "url"}} whose url is a
 *       local folder strictly inside the model root ({@code DOGBREED_MODEL_ROOT}): no scheme, no
 *       "..", symbolic links resolved before the check. MMS then registers the canonical folder
 *       with this project's handler and the Python runtime, whatever the request or a manifest
 *       says, and with at most the configured number of workers.
 *   <li>{@code PUT /models/NAME} (scaling) is refused: the worker count is the server's setting.
 *   <li>A write with an {@code Origin} header is refused: browsers send it on every cross-site
 *       request, the SageMaker platform never does.
 * </ul>
 *
 * <p>With shared workers (multi-model mode, {@link SharedModels}) this handler answers listing,
 * describing, loading and unloading itself, in MMS's formats; otherwise listing, describing and
 * unregistering are MMS's own. The checks run on the netty thread
 * that received the request, while its body is still readable; MMS's endpoint plugins run later
 * on another thread, after netty has released the body, so a plugin cannot do this.
 */
public class GuardedManagementHandler extends ManagementRequestHandler {

    static final String ROOT_ENV = "DOGBREED_MODEL_ROOT";
    // SageMaker's model_name is opaque; it names a folder and a URL path segment, so no slash or control character.
    private static final Pattern MODEL_NAME = Pattern.compile("(?!\\.{1,2}$)[^/\\\\\\p{Cntrl}]{1,255}");
    private static final Pattern SCHEME = Pattern.compile("^[A-Za-z][A-Za-z0-9+.-]*:.*", Pattern.DOTALL);
    private static final Set<String> FIXED_FIELDS =
            Set.of("batch_size", "max_batch_delay", "response_timeout", "preload_model");
    private static final int MAX_BODY_BYTES = 64 * 1024;

    /** A refusal with a status MMS has no exception for; the class name is the error's type. */
    static class ForbiddenException extends Exception {
        static final long serialVersionUID = 1L;

        ForbiddenException(String message) {
            super(message);
        }
    }

    /** See {@link ForbiddenException}. */
    static class UnsupportedMediaTypeException extends Exception {
        static final long serialVersionUID = 1L;

        UnsupportedMediaTypeException(String message) {
            super(message);
        }
    }

    /** See {@link ForbiddenException}. */
    static class RequestTooLargeException extends Exception {
        static final long serialVersionUID = 1L;

        RequestTooLargeException(String message) {
            super(message);
        }
    }

    public GuardedManagementHandler(Map<String, ModelServerEndpoint> endpoints) {
        super(endpoints);
    }

    @Override
    protected void handleRequest(
            ChannelHandlerContext ctx,
            FullHttpRequest req,
            QueryStringDecoder decoder,
            String[] segments)
            throws ModelException {
        boolean models = segments.length >= 2 && segments.length <= 3 && "models".equals(segments[1]);
        if (!models) {
            super.handleRequest(ctx, req, decoder, segments);
            return;
        }
        HttpMethod method = req.method();
        if (HttpMethod.PUT.equals(method)) {
            throw new MethodNotAllowedException();
        }
        if (!HttpMethod.GET.equals(method) && req.headers().contains("Origin")) {
            NettyUtils.sendError(ctx, HttpResponseStatus.FORBIDDEN,
                    new ForbiddenException("model management does not accept requests from web pages"));
            return;
        }
        boolean shared = SharedModels.enabled();
        if (shared && HttpMethod.GET.equals(method)) {
            if (segments.length == 2) {
                SharedModels.list(ctx, decoder);
            } else {
                SharedModels.describe(ctx, segments[2]);
            }
            return;
        }
        if (shared && HttpMethod.DELETE.equals(method) && segments.length == 3) {
            SharedModels.unload(ctx, segments[2]);
            return;
        }
        if (!HttpMethod.POST.equals(method) || segments.length != 2) {
            super.handleRequest(ctx, req, decoder, segments);
            return;
        }
        JsonObject checked;
        try {
            checked = checkedRegistration(req);
        } catch (UnsupportedMediaTypeException e) {
            NettyUtils.sendError(ctx, HttpResponseStatus.UNSUPPORTED_MEDIA_TYPE, e);
            return;
        } catch (RequestTooLargeException e) {
            NettyUtils.sendError(ctx, HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE, e);
            return;
        }
        if (shared) {
            SharedModels.load(
                    ctx, checked.get("model_name").getAsString(), checked.get("url").getAsString());
            return;
        }
        FullHttpRequest sanitized = req.replace(Unpooled.copiedBuffer(checked.toString(), CharsetUtil.UTF_8));
        try {
            // MMS reads the body before this returns; what it does next (starting workers) is asynchronous.
            super.handleRequest(ctx, sanitized, new QueryStringDecoder("/models"), segments);
        } finally {
            sanitized.release();
        }
    }

    /** The registration MMS will run: only checked fields, the folder canonical, handler and runtime fixed. */
    static JsonObject checkedRegistration(FullHttpRequest req)
            throws ModelException, UnsupportedMediaTypeException, RequestTooLargeException {
        String type = req.headers().get("Content-Type", "");
        if (!type.toLowerCase().startsWith("application/json")) {
            throw new UnsupportedMediaTypeException(
                    "send the model as a JSON body {\"model_name\": ..., \"url\": ...}");
        }
        if (req.content().readableBytes() > MAX_BODY_BYTES) {
            throw new RequestTooLargeException("the request body is too large");
        }
        JsonObject body = parseObject(req.content().toString(CharsetUtil.UTF_8));
        String handler = ConfigManager.getInstance().getMmsDefaultServiceHandler();
        String requestedHandler = stringField(body, "handler");
        if (requestedHandler != null && !requestedHandler.equals(handler)) {
            throw new BadRequestException("handler cannot be chosen: every model is served by " + handler);
        }
        String runtime = stringField(body, "runtime");
        if (runtime != null && !"python".equals(runtime)) {
            throw new BadRequestException("runtime cannot be chosen");
        }
        for (String field : FIXED_FIELDS) {
            if (body.has(field)) {
                throw new BadRequestException(field + " cannot be set: the server's configuration fixes it");
            }
        }
        String name = stringField(body, "model_name");
        if (name == null || !MODEL_NAME.matcher(name).matches()) {
            throw new BadRequestException("model_name must be 1-255 characters without '/', '\\' or control characters");
        }
        File folder = modelFolder(stringField(body, "url"), System.getenv(ROOT_ENV));

        JsonObject checked = new JsonObject();
        checked.addProperty("model_name", name);
        checked.addProperty("url", folder.getPath());
        checked.addProperty("handler", handler);
        checked.addProperty("runtime", "python");
        checked.addProperty("initial_workers", initialWorkers(body));
        checked.addProperty("synchronous", true);
        return checked;
    }

    private static JsonObject parseObject(String text) throws BadRequestException {
        JsonElement parsed;
        try {
            parsed = JsonParser.parseString(text);
        } catch (JsonParseException | StackOverflowError e) {
            throw new BadRequestException("invalid JSON body");
        }
        if (!parsed.isJsonObject()) {
            throw new BadRequestException("the body must be a JSON object");
        }
        return parsed.getAsJsonObject();
    }

    private static String stringField(JsonObject body, String name) throws BadRequestException {
        JsonElement value = body.get(name);
        if (value == null || value.isJsonNull()) {
            return null;
        }
        if (!value.isJsonPrimitive() || !value.getAsJsonPrimitive().isString()) {
            throw new BadRequestException(name + " must be a string");
        }
        return value.getAsString();
    }

    /** The canonical folder {@code url} names, which must lie strictly inside the model root. */
    static File modelFolder(String url, String root) throws ModelException {
        if (url == null || url.isEmpty()) {
            throw new BadRequestException("Parameter url is required.");
        }
        if (SCHEME.matcher(url).matches()) {
            throw new BadRequestException(
                    "url must be a local folder under the model root; remote models are not loaded");
        }
        if (!url.startsWith("/") || url.contains("..") || url.indexOf('\0') >= 0) {
            throw new BadRequestException("url must be an absolute path under the model root, without '..'");
        }
        if (root == null || root.isEmpty()) {
            throw new BadRequestException("no model root is configured: model management is off");
        }
        File folder;
        String canonicalRoot;
        try {
            canonicalRoot = new File(root).getCanonicalPath();
            folder = new File(url).getCanonicalFile();
        } catch (IOException e) {
            throw new BadRequestException("url is not a valid path");
        }
        if (!folder.getPath().startsWith(canonicalRoot + File.separator)) {
            throw new BadRequestException("url must name a folder inside the model root");
        }
        if (!folder.exists()) {
            throw new ModelNotFoundException("Model not found in model store: " + url);
        }
        if (!folder.isDirectory()) {
            throw new BadRequestException("url must name an unpacked model folder");
        }
        return folder;
    }

    private static int initialWorkers(JsonObject body) throws BadRequestException {
        int configured = Math.max(1, ConfigManager.getInstance().getConfiguredDefaultWorkersPerModel());
        JsonElement value = body.get("initial_workers");
        if (value == null || value.isJsonNull()) {
            return configured;
        }
        int workers;
        try {
            workers = value.getAsInt();
        } catch (NumberFormatException | UnsupportedOperationException | IllegalStateException e) {
            throw new BadRequestException("initial_workers must be an integer");
        }
        if (workers < 1 || workers > configured) {
            throw new BadRequestException("initial_workers must be between 1 and " + configured);
        }
        return workers;
    }
}

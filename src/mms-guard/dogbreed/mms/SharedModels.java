package dogbreed.mms;

import com.amazonaws.ml.mms.archive.ModelException;
import com.amazonaws.ml.mms.archive.ModelNotFoundException;
import com.amazonaws.ml.mms.http.ConflictStatusException;
import com.amazonaws.ml.mms.http.DescribeModelResponse;
import com.amazonaws.ml.mms.http.InternalServerException;
import com.amazonaws.ml.mms.http.ListModelsResponse;
import com.amazonaws.ml.mms.http.ServiceUnavailableException;
import com.amazonaws.ml.mms.http.StatusResponse;
import com.amazonaws.ml.mms.util.JsonUtils;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.amazonaws.ml.mms.util.messages.InputParameter;
import com.amazonaws.ml.mms.util.messages.RequestInput;
import com.amazonaws.ml.mms.util.messages.WorkerCommands;
import com.amazonaws.ml.mms.wlm.Job;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.CharsetUtil;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.UUID;

/**
 * Multi-model mode without a process per model: every model the platform loads shares the
 * workers of one MMS model, registered at start-up ({@code DOGBREED_SHARED_MODEL}).
 *
 * <p>MMS 1.1.11 starts a Python worker for each registered model, about 60 MiB each before the
 * model itself. Here the registry of loaded names lives in this class instead, and a load, an
 * unload or an invoke becomes a job for the shared worker, carrying the server's secret token
 * ({@code DOGBREED_CONTROL_TOKEN}) and the command in headers that a client cannot forge: the
 * worker refuses any request without the token. The worker decides whether a model fits its
 * memory budget and answers a load with 507 when it does not.
 *
 * <p>The management answers keep MMS's shapes: {@code {"status": "Model \"NAME\" registered"}},
 * 409 for a name loaded or loading, 404 for an unknown name, the paginated list, and the
 * description with the shared workers and the memory the model was charged.
 *
 * <p>An invoke and an unload of one name are queued in the order they arrived (one lock, one
 * queue), so an invoke answers 200 before the unload or 404 after it.
 */
final class SharedModels {

    static final String SHARED_ENV = "DOGBREED_SHARED_MODEL";
    static final String TOKEN_ENV = "DOGBREED_CONTROL_TOKEN";
    private static final String CONTROL_HEADER = "x-dogbreed-control";
    private static final String COMMAND_HEADER = "x-dogbreed-command";
    private static final String NAME_HEADER = "x-dogbreed-model";
    private static final String URL_HEADER = "x-dogbreed-model-url";

    private static final class Entry {
        final String url;
        final long memoryBytes;

        Entry(String url, long memoryBytes) {
            this.url = url;
            this.memoryBytes = memoryBytes;
        }
    }

    private static final String SHARED_MODEL = nonEmpty(System.getenv(SHARED_ENV));
    private static final String TOKEN = nonEmpty(System.getenv(TOKEN_ENV));
    private static final Object LOCK = new Object();
    private static final Map<String, Entry> LOADED = new TreeMap<>();
    private static final Set<String> LOADING = new HashSet<>();

    private SharedModels() {}

    /** Whether the launcher runs multi-model mode on shared workers. */
    static boolean enabled() {
        return SHARED_MODEL != null && TOKEN != null;
    }

    private static String nonEmpty(String value) {
        return value == null || value.isEmpty() ? null : value;
    }

    /** POST /models, already checked by the guard: the worker loads it, or refuses it (507, 400). */
    static void load(ChannelHandlerContext ctx, String name, String url) throws ModelException {
        synchronized (LOCK) {
            if (LOADED.containsKey(name) || LOADING.contains(name)) {
                throw new ConflictStatusException("Model " + name + " is already registered.");
            }
            LOADING.add(name);
        }
        RequestInput input = command("load", name, url);
        ControlJob job =
                new ControlJob(input) {
                    @Override
                    void answered(int status, byte[] body, CharSequence contentType) {
                        synchronized (LOCK) {
                            LOADING.remove(name);
                            if (status == 200) {
                                LOADED.put(name, new Entry(url, memoryBytes(body)));
                            }
                        }
                        if (status == 200) {
                            NettyUtils.sendJsonResponse(
                                    ctx, new StatusResponse("Model \"" + name + "\" registered"));
                        } else {
                            forward(ctx, status, body, contentType);
                        }
                    }
                };
        try {
            submit(job);
        } catch (ModelException | RuntimeException e) {
            synchronized (LOCK) {
                LOADING.remove(name);
            }
            throw e;
        }
    }

    /** DELETE /models/NAME: gone from the registry at once; answered when the worker has freed it. */
    static void unload(ChannelHandlerContext ctx, String name) throws ModelException {
        synchronized (LOCK) {
            if (LOADED.remove(name) == null) {
                throw new ModelNotFoundException("Model not found: " + name);
            }
            submit(
                    new ControlJob(command("unload", name, null)) {
                        @Override
                        void answered(int status, byte[] body, CharSequence contentType) {
                            // 404: a worker MMS restarted never loaded it again; it is gone all the same.
                            if (status == 200 || status == 404) {
                                NettyUtils.sendJsonResponse(
                                        ctx,
                                        new StatusResponse("Model \"" + name + "\" unregistered"));
                            } else {
                                forward(ctx, status, body, contentType);
                            }
                        }
                    });
        }
    }

    /** POST /models/NAME/invoke: the request, as MMS would pass it, for the shared worker. */
    static void invoke(
            ChannelHandlerContext ctx, FullHttpRequest req, QueryStringDecoder decoder, String name)
            throws ModelException {
        RequestInput input = QueuedRequests.input(ctx, req, decoder);
        synchronized (LOCK) {
            Entry entry = LOADED.get(name);
            if (entry == null) {
                throw new ModelNotFoundException("Model not found: " + name);
            }
            addControl(input, "invoke", name, entry.url);
            QueuedRequests.submit(ctx, SHARED_MODEL, input, req.content().readableBytes());
        }
    }

    /** GET /models, paginated as MMS does it. */
    static void list(ChannelHandlerContext ctx, QueryStringDecoder decoder) {
        int limit = NettyUtils.getIntParameter(decoder, "limit", 100);
        int pageToken = Math.max(0, NettyUtils.getIntParameter(decoder, "next_page_token", 0));
        if (limit > 100 || limit < 0) {
            limit = 100;
        }
        List<Map.Entry<String, Entry>> entries;
        synchronized (LOCK) {
            entries = new ArrayList<>(LOADED.entrySet());
        }
        ListModelsResponse list = new ListModelsResponse();
        int last = pageToken + limit;
        if (last > entries.size()) {
            last = entries.size();
        } else {
            list.setNextPageToken(String.valueOf(last));
        }
        for (int i = pageToken; i < last; ++i) {
            list.addModel(entries.get(i).getKey(), entries.get(i).getValue().url);
        }
        NettyUtils.sendJsonResponse(ctx, list);
    }

    /** GET /models/NAME: MMS's description, with the shared workers and the model's memory. */
    static void describe(ChannelHandlerContext ctx, String name) throws ModelNotFoundException {
        Entry entry;
        synchronized (LOCK) {
            entry = LOADED.get(name);
        }
        if (entry == null) {
            throw new ModelNotFoundException("Model not found: " + name);
        }
        DescribeModelResponse resp = new DescribeModelResponse();
        resp.setModelName(name);
        resp.setModelUrl(entry.url);
        resp.setRuntime("python");
        resp.setBatchSize(1);
        resp.setMaxBatchDelay(100);
        List<WorkerThread> workers = ModelManager.getInstance().getWorkers(SHARED_MODEL);
        resp.setMinWorkers(workers.size());
        resp.setMaxWorkers(workers.size());
        for (WorkerThread worker : workers) {
            resp.addWorker(
                    worker.getWorkerId(),
                    worker.getStartTime(),
                    worker.isRunning(),
                    worker.getGpuId(),
                    worker.getMemory());
        }
        JsonObject json = JsonUtils.GSON.toJsonTree(resp).getAsJsonObject();
        json.addProperty("memoryBytes", entry.memoryBytes);
        NettyUtils.sendJsonResponse(ctx, JsonUtils.GSON_PRETTY.toJson(json));
    }

    private static RequestInput command(String command, String name, String url) {
        RequestInput input = new RequestInput(UUID.randomUUID().toString());
        addControl(input, command, name, url);
        input.addParameter(new InputParameter("body", new byte[0], "application/json"));
        return input;
    }

    private static void addControl(RequestInput input, String command, String name, String url) {
        input.updateHeaders(CONTROL_HEADER, TOKEN);
        input.updateHeaders(COMMAND_HEADER, command);
        input.updateHeaders(NAME_HEADER, name);
        if (url != null) {
            input.updateHeaders(URL_HEADER, url);
        }
    }

    private static void submit(Job job) throws ModelException {
        if (!ModelManager.getInstance().addJob(job)) {
            throw new ServiceUnavailableException("No worker is available to serve the request.");
        }
    }

    private static long memoryBytes(byte[] body) {
        try {
            JsonElement parsed = JsonParser.parseString(new String(body, CharsetUtil.UTF_8));
            JsonElement value = parsed.getAsJsonObject().get("memory_bytes");
            return value == null ? -1 : value.getAsLong();
        } catch (RuntimeException e) {
            return -1;
        }
    }

    private static void forward(
            ChannelHandlerContext ctx, int status, byte[] body, CharSequence contentType) {
        FullHttpResponse resp =
                new DefaultFullHttpResponse(
                        HttpVersion.HTTP_1_1,
                        HttpResponseStatus.valueOf(status),
                        Unpooled.wrappedBuffer(body));
        if (contentType != null && contentType.length() > 0) {
            resp.headers().set(HttpHeaderNames.CONTENT_TYPE, contentType);
        }
        NettyUtils.sendHttpResponse(ctx, resp, true);
    }

    /** A job whose answer goes to this class, not straight to a client. */
    private abstract static class ControlJob extends Job {

        ControlJob(RequestInput input) {
            super(null, SHARED_MODEL, WorkerCommands.PREDICT, input);
        }

        abstract void answered(int status, byte[] body, CharSequence contentType);

        @Override
        public void response(
                byte[] body,
                CharSequence contentType,
                int statusCode,
                String statusPhrase,
                Map<String, String> responseHeaders) {
            answered(statusCode, body, contentType);
        }

        @Override
        public void sendError(HttpResponseStatus status, String error) {
            JsonObject json = new JsonObject();
            json.addProperty("code", status.code());
            json.addProperty("type", InternalServerException.class.getSimpleName());
            json.addProperty("message", error);
            answered(
                    status.code(),
                    json.toString().getBytes(CharsetUtil.UTF_8),
                    "application/json");
        }
    }
}

package dogbreed.mms;

import com.amazonaws.ml.mms.archive.ModelException;
import com.amazonaws.ml.mms.http.ServiceUnavailableException;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.amazonaws.ml.mms.util.messages.InputParameter;
import com.amazonaws.ml.mms.util.messages.RequestInput;
import com.amazonaws.ml.mms.util.messages.WorkerCommands;
import com.amazonaws.ml.mms.wlm.Job;
import com.amazonaws.ml.mms.wlm.ModelManager;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Inference requests on their way to a worker, bounded by the bytes of their bodies.
 *
 * <p>MMS copies each request's body onto the JVM's heap and keeps it there until a worker has
 * answered; its queue is bounded only by count (100 by default), so a burst of large bodies fills
 * any heap, and the JVM then ends the container. Here the bodies waiting for or running in a
 * worker may take at most {@code DOGBREED_QUEUED_BODY_BYTES} together (the launcher sizes the heap
 * to hold them); a request past that is answered 507 at once, and is welcome again as soon as
 * earlier ones are answered.
 */
final class QueuedRequests {

    static final String LIMIT_ENV = "DOGBREED_QUEUED_BODY_BYTES";
    private static final AtomicLong QUEUED = new AtomicLong();
    private static final long LIMIT = limit(System.getenv(LIMIT_ENV));

    private QueuedRequests() {}

    private static long limit(String value) {
        try {
            return value == null || value.isEmpty() ? Long.MAX_VALUE : Long.parseLong(value);
        } catch (NumberFormatException e) {
            return Long.MAX_VALUE;
        }
    }

    /** The request as MMS hands it to a worker: query parameters, headers but the project's own, the body. */
    static RequestInput input(ChannelHandlerContext ctx, FullHttpRequest req, QueryStringDecoder decoder) {
        RequestInput input = new RequestInput(NettyUtils.getRequestId(ctx.channel()));
        for (Map.Entry<String, List<String>> entry : decoder.parameters().entrySet()) {
            for (String value : entry.getValue()) {
                input.addParameter(new InputParameter(entry.getKey(), value));
            }
        }
        for (Map.Entry<String, String> entry : req.headers().entries()) {
            if (!entry.getKey().toLowerCase().startsWith("x-dogbreed-")) {
                input.updateHeaders(entry.getKey(), entry.getValue());
            }
        }
        input.addParameter(
                new InputParameter("body", NettyUtils.getBytes(req.content()), HttpUtil.getMimeType(req)));
        return input;
    }

    /** Queue a request for ``model``'s workers, or refuse it: 507 past the byte bound, 503 when MMS's queue is full. */
    static void submit(ChannelHandlerContext ctx, String model, RequestInput input, long bytes)
            throws ModelException {
        if (QUEUED.addAndGet(bytes) > LIMIT && bytes > 0) {
            QUEUED.addAndGet(-bytes);
            NettyUtils.sendError(
                    ctx,
                    HttpResponseStatus.INSUFFICIENT_STORAGE,
                    new InsufficientMemory(),
                    "the server holds as many request bytes as its memory allows; retry shortly");
            return;
        }
        Job job = new BoundedJob(ctx, model, input, bytes);
        boolean queued = false;
        try {
            queued = ModelManager.getInstance().addJob(job);
        } finally {
            if (!queued) {
                QUEUED.addAndGet(-bytes);
            }
        }
        if (!queued) {
            throw new ServiceUnavailableException(
                    "No worker is available to serve request for model: " + model);
        }
    }

    /** The error's type in the JSON body. */
    static final class InsufficientMemory extends Exception {
        static final long serialVersionUID = 1L;
    }

    /** A job that gives its body's bytes back once it is answered, whichever way. */
    private static final class BoundedJob extends Job {
        private final long bytes;
        private final AtomicBoolean released = new AtomicBoolean();

        BoundedJob(ChannelHandlerContext ctx, String model, RequestInput input, long bytes) {
            super(ctx, model, WorkerCommands.PREDICT, input);
            this.bytes = bytes;
        }

        private void release() {
            if (released.compareAndSet(false, true)) {
                QUEUED.addAndGet(-bytes);
            }
        }

        @Override
        public void response(
                byte[] body,
                CharSequence contentType,
                int statusCode,
                String statusPhrase,
                Map<String, String> responseHeaders) {
            release();
            super.response(body, contentType, statusCode, statusPhrase, responseHeaders);
        }

        @Override
        public void sendError(HttpResponseStatus status, String error) {
            release();
            super.sendError(status, error);
        }
    }
}
